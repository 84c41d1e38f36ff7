"""Does our BERT MLM pretraining learn as fast as keras-hub's, on the same records?

  pip install '.[interop]'        # keras-hub
  python -m tools.pretraining_peer --records=WORK/records/wikipedia20m_bert_... --steps=3000

A flat held-out MLM curve can mean a too-small budget or a broken pretraining path. This
separates the two: our `BertPretrainer` and keras-hub's `BertMaskedLM` (its BertBackbone and
MaskedLMHead, as shipped) start from the same weights (ours, copied with the keras_hub_bert
converter; the MLM head's transform, LayerNorm and bias by name), read the same batches in the
same order from our input pipeline, and are trained by the same `TrainStep` with the same
optimizer recipe (AdamW, warmup then linear decay, clip 1.0) and the same MLM loss. Only the
model code differs. Dropout stays on (0.1) on both sides, so the curves are two samples of one
process, not step-identical. NSP is off: keras-hub has no NSP head.

Prints the held-out MLM loss / accuracy of both every --eval_every steps (the same
--eval_batches batches of the held-out files each time), the throughput of each, and a last
line `peer: ours mlm_acc X keras_hub Y gap +-Z; mlm_loss X Y gap +-Z`.
"""
import glob
import json
import os
import pathlib
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import flags

from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    """Flags are defined when the binary runs, not on import: tests import KerasHubMlm beside
    other binaries' modules in one process, and absl refuses a flag defined twice."""
    flags.DEFINE_string("records", None, "A folder of BERT pretraining records written by "
                        "create_data (its manifest.json names the vocabulary).")
    flags.DEFINE_string("eval_records", "", "Held-out record files (glob); default: the folder's "
                        "last file, which is then left out of training.")
    flags.DEFINE_string("model_config", "bert_tiny", "Our BERT config (sizes for both sides).")
    flags.DEFINE_integer("steps", 3000, "Optimizer steps on each side.")
    flags.DEFINE_integer("batch_size", 32, "Sequences per step.")
    flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (10% warmup, linear decay).")
    flags.DEFINE_integer("eval_every", 500, "Evaluate both models every this many steps.")
    flags.DEFINE_integer("eval_batches", 20, "Held-out batches per evaluation.")
    flags.DEFINE_integer("seed", 1, "Seed of the shared initial weights and the batch order.")
    flags.DEFINE_bool("jit_compile", True, "XLA-compile both sides' forward and backward pass.")


class KerasHubMlm:
    """keras-hub's BertMaskedLM behind our batch keys: batch -> {"mlm_logits": ...}."""

    def __init__(self, encoder, head):
        import keras_hub

        from tfmodels.checkpoints.keras_hub_bert import to_keras_hub
        backbone = to_keras_hub(encoder)
        self.model = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
        backbone.get_layer("pooled_dense").trainable = False   # as ours: no NSP, no gradient
        hub_head = self.model.masked_lm_head
        # Same names, different owners: transform -> intermediate_dense, and so on.
        for ours, theirs in ((head.transform.kernel, hub_head._intermediate_dense.kernel),
                             (head.transform.bias, hub_head._intermediate_dense.bias),
                             (head.layer_norm.gamma, hub_head._intermediate_layer_norm.gamma),
                             (head.layer_norm.beta, hub_head._intermediate_layer_norm.beta),
                             (head.output_bias, hub_head._bias)):
            theirs.assign(ours)

    @property
    def trainable_variables(self):
        return self.model.trainable_variables

    def __call__(self, batch, training=None):
        logits = self.model({"token_ids": batch["input_ids"],
                             "segment_ids": batch["segment_ids"],
                             "padding_mask": batch["input_mask"],
                             "mask_positions": batch["masked_lm_positions"]},
                            training=training)
        return {"mlm_logits": logits}


def record_files(folder: str, eval_pattern: str):
    files = sorted(glob.glob(os.path.join(folder, "*.tfrecord")))
    if not files:
        raise ValueError(f"--records={folder}: no *.tfrecord files there")
    if eval_pattern:
        eval_files = sorted(glob.glob(eval_pattern))
        if not eval_files:
            raise ValueError(f"--eval_records={eval_pattern}: matches no file")
        return [f for f in files if f not in eval_files], eval_files
    return files[:-1], files[-1:]


def read_manifest(folder: str) -> dict:
    """The create_data settings the records were written with."""
    manifest = pathlib.Path(folder) / "manifest.json"
    if not manifest.exists():
        raise ValueError(f"--records={folder}: no manifest.json (not a create_data folder)")
    return json.loads(manifest.read_text())["config"]


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from pretraining import input_pipeline
    from tfmodels import configs
    from tfmodels.bert import BertPretrainer
    from tfmodels.losses import bert_pretraining_loss
    from tfmodels.optimization import create_optimizer
    from pretraining.trainer import Evaluator
    from tfmodels.tokenizers.wordpiece import read_vocab_file
    from tfmodels.training import TrainStep
    from tools.machine import cpu_description

    if not FLAGS.records:
        raise ValueError("--records is required")
    if FLAGS.steps < 1 or FLAGS.eval_every < 1:
        raise ValueError("--steps and --eval_every must be >= 1")
    train_files, eval_files = record_files(FLAGS.records, FLAGS.eval_records)
    manifest = read_manifest(FLAGS.records)
    seq_length, max_predictions = manifest["max_seq_length"], manifest["max_predictions_per_seq"]
    print(f"machine: {cpu_description()}")
    print(f"records: {FLAGS.records} ({len(train_files)} training files, held out: "
          f"{', '.join(os.path.basename(f) for f in eval_files)})")

    # Ours is seeded through its argument; the global seed (set here, in the binary's main)
    # is for keras-hub's backbone, whose dropout layers take no seed from us.
    keras.utils.set_random_seed(FLAGS.seed)
    cfg = configs.get_config(FLAGS.model_config,
                             vocab_size=len(read_vocab_file(manifest["vocab_file"])))
    ours = BertPretrainer(cfg, seed=FLAGS.seed)
    ours.nsp_head.trainable = False          # no NSP loss: as build_model does for use_nsp=False
    ours.encoder.pooler.trainable = False
    peer = KerasHubMlm(ours.encoder, ours.mlm_head)
    print(f"model: {FLAGS.model_config} ({cfg.num_layers} layers, hidden {cfg.hidden_size}, "
          f"vocab {cfg.vocab_size}), batch {FLAGS.batch_size} x {seq_length}, lr "
          f"{FLAGS.learning_rate:g}, {FLAGS.steps} steps, seed {FLAGS.seed}; keras-hub "
          f"{__import__('keras_hub').__version__}, keras {keras.__version__}, tf {tf.__version__}")

    def loss_fn(outputs, batch):
        return bert_pretraining_loss(outputs, batch, use_nsp=False)

    steps = {}
    for name, model in (("ours", ours), ("keras_hub", peer)):
        optimizer = create_optimizer(FLAGS.learning_rate, FLAGS.steps,
                                     warmup_steps=FLAGS.steps // 10)
        steps[name] = TrainStep(model, optimizer, loss_fn, jit_compile=FLAGS.jit_compile,
                                clip_norm=1.0)
    train = input_pipeline.bert_pretraining_dataset(
        train_files, FLAGS.batch_size, seq_length, max_predictions, seed=FLAGS.seed,
        use_nsp=False)
    # Pretraining's own held-out evaluation: the same first --eval_batches batches each time.
    evaluators = {name: Evaluator(
        model, loss_fn, tf.distribute.get_strategy(),
        lambda context: input_pipeline.bert_pretraining_dataset(
            eval_files, FLAGS.batch_size, seq_length, max_predictions, is_training=False,
            input_context=context, use_nsp=False), FLAGS.eval_batches)
        for name, model in (("ours", ours), ("keras_hub", peer))}
    seconds = {"ours": 0.0, "keras_hub": 0.0}
    header = "| step | ours MLM loss | keras-hub MLM loss | ours MLM acc | keras-hub MLM acc |"
    print("\n" + header + "\n|---|---|---|---|---|")
    results = {}
    for step, batch in enumerate(train.take(FLAGS.steps), start=1):
        # Alternate which side runs first: neither always gets the warmer cache.
        order = ("ours", "keras_hub") if step % 2 else ("keras_hub", "ours")
        for name in order:
            start = time.perf_counter()
            metrics = steps[name](batch)
            float(metrics["loss"])  # wait for the step before stopping the clock
            if step > 1:  # the first step traces and compiles
                seconds[name] += time.perf_counter() - start
        if step % FLAGS.eval_every == 0 or step == FLAGS.steps:
            results = {name: evaluate() for name, evaluate in evaluators.items()}
            ours_eval, hub_eval = results["ours"], results["keras_hub"]
            print(f"| {step} | {ours_eval['eval_mlm_loss']:.3f} | "
                  f"{hub_eval['eval_mlm_loss']:.3f} | {ours_eval['eval_mlm_accuracy']:.3f} | "
                  f"{hub_eval['eval_mlm_accuracy']:.3f} |", flush=True)
    tokens = (FLAGS.steps - 1) * FLAGS.batch_size * seq_length
    print("\n" + ", ".join(f"{name}: {tokens / max(s, 1e-9) / 1000:.1f}k tokens/s"
                           for name, s in seconds.items()) + " (training steps, after the first)")
    ours_loss, ours_acc, hub_loss, hub_acc = (
        results[name][key] for name in ("ours", "keras_hub")
        for key in ("eval_mlm_loss", "eval_mlm_accuracy"))
    print(f"peer: ours mlm_acc {ours_acc:.3f} keras_hub {hub_acc:.3f} gap "
          f"{ours_acc - hub_acc:+.3f}; mlm_loss {ours_loss:.3f} {hub_loss:.3f} gap "
          f"{ours_loss - hub_loss:+.3f}")


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
