"""Training parity with the reference implementation (transformers on torch, CPU): every
fine-tuning head trained 20 steps on both sides from the same weights and batches must agree
to 1e-5 (relative per-step loss, absolute weights). See tools/parity/ and
`python -m tools.training_parity`, which also prints the bf16 / XLA drift of our losses.

The negative tests show the bars are sharp enough to catch a wrong recipe.
"""
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="training parity needs the reference extra: pip install -e '.[reference]'")
pytest.importorskip(
    "transformers", reason="training parity needs the reference extra: pip install -e '.[reference]'")

from tools.parity import cases, harness  # noqa: E402  (after the skips: imports torch code)

torch.set_num_threads(1)  # a good neighbour on shared CPUs

RANDOM_CONFIG_HEADS = [h for h in cases.HEADS if h not in cases.REAL_WEIGHT_HEADS]


@pytest.mark.parametrize("head", RANDOM_CONFIG_HEADS)
def test_head_trains_like_the_reference(head):
    result = harness.compare_head(cases.make_case(head), steps=20, drift=False)
    assert len(result.ours.losses) == len(result.reference.losses) == 20
    # The comparison means something only if training moved the weights well past the bar.
    assert result.moved > 100 * harness.WEIGHT_BAR, result.moved
    assert result.passed, result.failure()


@pytest.mark.slow
def test_real_minilm_classifier_trains_like_the_reference(minilm_dir):
    result = harness.compare_head(cases.make_case("bert_classify_minilm"), steps=20,
                                  drift=False)
    assert result.moved > 10 * harness.WEIGHT_BAR, result.moved
    assert result.passed, result.failure()


def test_every_parameter_is_tied_both_ways():
    """A parameter trained on one side only would escape the comparison."""
    case = cases.make_case("gpt_similarity", steps=1)
    model = case.build_ours()
    ties = case.ties(model)
    reference = case.build_reference(ties)
    torch_names = {n for tie in ties for n in tie.torch_names}
    assert torch_names == set(dict(reference.named_parameters()))
    assert {id(t.ours) for t in ties} == {id(v) for v in model.trainable_variables}


def test_reference_decaying_layer_norm_and_biases_fails_the_weight_bar():
    case = cases.make_case("bert_classify_single")
    reference_params = dict(case.build_reference(case.ties(case.build_ours())).named_parameters())
    result = harness.compare_head(case, steps=20, drift=False,
                                  decay_names=list(reference_params))
    assert not result.passed
    assert result.weight_difference > 10 * harness.WEIGHT_BAR
    assert "norm" in result.worst_weight or "bias" in result.worst_weight, result.worst_weight


def test_torch_epsilon_placement_is_a_different_recipe():
    """torch adds eps to the bias-corrected sqrt(v_hat), Keras to the raw sqrt(v): with
    eps 1e-6 that is eps / sqrt(1 - beta_2^t) (3e-5 at step 1) in torch's terms, which
    matters for small gradients. The harness sets torch's eps per step; without it the
    weights part by far more than the bar."""
    result = harness.compare_head(cases.make_case("gpt_classify"), steps=20, drift=False,
                                  match_epsilon=False)
    assert not result.passed
    assert result.weight_difference > 100 * harness.WEIGHT_BAR


def test_span_difference_from_transformers_is_padding_in_the_softmax():
    """BertForQuestionAnswering's own loss (like google-research/bert's) puts padding in the
    start/end softmax; ours keeps it out. On padded windows the first loss differs already;
    the harness's span reference masks padding (printed), and then agrees (test above)."""
    case = cases.make_case("bert_span", span_padding_in_softmax=True)
    assert (case.batches[0]["input_mask"] == 0).any()
    result = harness.compare_head(case, steps=2, drift=False)
    assert not result.passed
    first = abs(result.ours.losses[0] - result.reference.losses[0]) / result.reference.losses[0]
    assert first > 1e-3  # before any update: the loss definition, not the optimizer
    # On the same batches without their padded rows, transformers' own loss trains exactly
    # like ours: padding is the only difference.
    unpadded = cases.make_case("bert_span", span_padding_in_softmax=True)
    unpadded.batches = [{k: v[b["input_mask"].all(axis=1)] for k, v in b.items()}
                        for b in unpadded.batches]
    assert all(0 < len(b["input_ids"]) < 8 for b in unpadded.batches)
    result = harness.compare_head(unpadded, steps=20, drift=False)
    assert result.passed, result.failure()


def test_drift_columns_measure_bf16_and_xla_runs_of_ours():
    # 10 steps keep the test short; the tool reports the drift over 20.
    result = harness.compare_head(cases.make_case("gpt_classify"), steps=10, drift=True)
    assert result.passed, result.failure()
    # bfloat16 (8 mantissa bits) moves the losses far beyond float32 rounding; a run that
    # matched float32 would not have been a bf16 run. XLA only reorders float32 arithmetic.
    assert result.bf16_drift > 1e-5
    assert np.isfinite(result.xla_drift) and result.xla_drift < 1e-5
    table = harness.markdown_table([result])
    assert "| gpt_classify | 10 |" in table and "pass" in table
