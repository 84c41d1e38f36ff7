"""Length-aware batching (finetune.batching): deterministic buckets, batches trimmed only of
padding, evaluation outputs back in input order, and model outputs that do not depend on the
width a row is computed at."""
import numpy as np
import pytest
import tensorflow as tf

from finetune import batching
from finetune.models import build_task_model
from finetune.tasks import get_task
from tfmodels import configs
from tfmodels.bert import BertEncoder

SEQ = 64


def features(n=100, seed=0, views=None):
    """Rows with random real lengths 3..SEQ, padded with 0 to SEQ columns."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, SEQ + 1, size=n)
    shape = (n, SEQ) if views is None else (n, views, SEQ)
    mask = (np.arange(SEQ) < (lengths if views is None else lengths[:, None])[..., None]
            ).astype(np.int32)
    ids = (rng.integers(5, 1000, size=shape) * mask).astype(np.int32)
    return {"input_ids": ids, "segment_ids": np.zeros(shape, np.int32), "input_mask": mask,
            "label": rng.integers(0, 2, size=n).astype(np.int32)}, lengths


def test_epoch_batches_are_deterministic_grouped_and_leave_out_a_random_remainder():
    _, lengths = features(103)
    widths = batching.batch_widths(lengths, SEQ)
    a = batching.epoch_batches(widths, 8, seed=3, epoch=0)
    np.testing.assert_array_equal(a, batching.epoch_batches(widths, 8, seed=3, epoch=0))
    assert a.shape == (12, 8) and len(set(a.ravel())) == 96
    assert not np.array_equal(a, batching.epoch_batches(widths, 8, seed=4, epoch=0))
    assert not np.array_equal(a, batching.epoch_batches(widths, 8, seed=3, epoch=1))
    # Grouped: a batch spans at most two neighbouring buckets.
    spans = [len(set(widths[rows])) for rows in a]
    assert max(spans) <= 2
    left_out = [set(range(103)) - set(batching.epoch_batches(widths, 8, 3, e).ravel())
                for e in range(4)]
    assert len({frozenset(s) for s in left_out}) > 1, "the same rows are always left out"


def test_train_batches_are_trimmed_only_of_padding():
    arrays, lengths = features(64)
    dataset = batching.train_dataset(arrays, 8, seed=0)
    seen = 0
    for batch in dataset.take(8):
        width = batch["input_ids"].shape[1]
        assert width % batching.LENGTH_MULTIPLE == 0 or width == SEQ
        real = batch["input_mask"].numpy().sum(1)
        assert real.max() <= width < real.max() + batching.LENGTH_MULTIPLE
        for ids, label in zip(batch["input_ids"].numpy(), batch["label"].numpy()):
            row = int(np.flatnonzero((arrays["input_ids"][:, :width] == ids).all(1)
                                     & (arrays["input_ids"][:, width:] == 0).all(1))[0])
            assert arrays["label"][row] == label
            seen += 1
    assert seen == 64
    fixed = next(iter(batching.train_dataset(arrays, 8, seed=0, pad_to_max_length=True)))
    assert fixed["input_ids"].shape == (8, SEQ)


def test_choice_rows_are_as_wide_as_their_longest_candidate():
    arrays, _ = features(16, views=4)
    widths = batching.batch_widths(batching.row_lengths(arrays), SEQ)
    assert (widths >= arrays["input_mask"].sum(-1).max(-1)).all()
    batch = next(iter(batching.train_dataset(arrays, 4, seed=0)))
    assert batch["input_ids"].shape[:2] == (4, 4)
    assert batch["input_mask"].numpy().sum(-1).max() <= batch["input_ids"].shape[-1]


@pytest.mark.parametrize("sequence_outputs", [False, True])
def test_predictions_come_back_in_input_order(sequence_outputs):
    arrays, lengths = features(37)
    widths_seen = []

    def predict(batch):
        widths_seen.append(batch["input_ids"].shape[1])
        real = (batch["input_ids"] * batch["input_mask"]).sum(1).astype(np.float32)
        if sequence_outputs:
            return {"logits": batch["input_ids"].astype(np.float32)}
        return {"logits": real}

    out = batching.predict_in_length_order(predict, arrays, 8, sequence_outputs)
    if sequence_outputs:
        real = arrays["input_mask"] > 0
        np.testing.assert_array_equal(out["logits"][real], arrays["input_ids"][real])
        # Positions past a batch's width come back as PADDED_LOGIT (never in an n-best list).
        assert (out["logits"][~real] <= 0).all()
    else:
        np.testing.assert_array_equal(out["logits"], arrays["input_ids"].sum(1))
    assert len(widths_seen) == 5 and min(widths_seen) < SEQ


def test_model_outputs_do_not_depend_on_the_width():
    """The models mask padding, so a row computed in a trimmed batch equals the same row
    computed at seq_length (what makes bucketing and per-request serving widths safe)."""
    arrays, _ = features(6)
    tf.keras.utils.set_random_seed(0)
    model = build_task_model(get_task("sst2"), BertEncoder(configs.get_config(
        "bert_test", vocab_size=1000, max_positions=SEQ)), "bert")
    inputs = {k: arrays[k] for k in ("input_ids", "segment_ids", "input_mask")}
    full = model(inputs, training=False)["logits"].numpy()
    width = int(arrays["input_mask"].sum(1).max())
    trimmed = model(batching.trim(inputs, width), training=False)["logits"].numpy()
    np.testing.assert_allclose(trimmed, full, atol=1e-5)


def train_on_buckets(jit_compile, batches):
    from finetune.losses import task_loss
    from tfmodels.training import TrainStep
    arrays, _ = features(96)
    tf.keras.utils.set_random_seed(0)
    spec = get_task("sst2")
    model = build_task_model(spec, BertEncoder(configs.get_config(
        "bert_test", vocab_size=1000, max_positions=SEQ)), "bert")
    dataset = batching.train_dataset(arrays, 8, seed=0)
    step = TrainStep(model, tf.keras.optimizers.Adam(1e-3), task_loss(spec, "bert"),
                     jit_compile=jit_compile, clip_norm=1.0,
                     input_signature=dataset.element_spec)
    widths = []
    for batch in dataset.take(batches):
        widths.append(batch["input_ids"].shape[1])
        assert np.isfinite(float(step(batch)["loss"]))
    return step, widths


def test_bucketed_batches_trace_the_step_once():
    """Varying widths must not retrace the step per batch: the dataset's spec (sequence axis
    open) is the step's signature (XLA then compiles one program per bucket at most)."""
    step, widths = train_on_buckets(False, 12)
    assert len(set(widths)) >= 4, widths
    assert step._step.experimental_get_tracing_count() == 1
    assert step._grads.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_xla_training_on_bucketed_batches():
    step, widths = train_on_buckets(True, 6)
    assert len(set(widths)) >= 3, widths
    assert step._grads.experimental_get_tracing_count() == 1
