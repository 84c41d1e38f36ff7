r"""Exports a fine-tuned `model.keras` (or a pretrained GPT-1 LM) as a TF Serving SavedModel.

  python -m tools.export_model --model=runs/sst2/model.keras --export_base=serving
  # -> serving/sst2/<next version>/ (raw-text `serving_default` + `serving_ids`)
  python -m tools.export_model --model=runs/sst2/model.keras --export_base=serving \
      --model_name=sst2_ids --ids_only   # only the core-op ids signature (stock TF Serving)
  python -m tools.export_model --model=runs/sst2/model.keras --export_base=serving \
      --model_name=sst2_bf16 --serving_precision=bfloat16   # bf16 compute, float32 outputs
  python -m tools.export_model --model=runs/gpt/pretrained.keras --export_base=serving \
      --bpe_encoder_file=../shared/data/gpt1_openai/encoder_bpe_40000.json \
      --bpe_merges_file=../shared/data/gpt1_openai/vocab_40000.bpe --seq_length=256

Task, vocabulary files, lower_case, seq_length and the SQuAD lengths default to the
fine-tuning run's results.json beside the model (flags override it). Everything else is in
finetune.export (signatures, versioning, warmup requests, op audit).
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import flags, logging

from finetune import export
from tfmodels.cli import run_binary
from tfmodels.model_files import check_keras_file

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags, defined when it runs (tfmodels.cli.run_binary), not on import."""
    flags.DEFINE_string("model", None, "A fine-tuned model.keras (it carries its tokenizer and "
                        "lengths; the flags below override them), or a GptLanguageModel .keras "
                        "with its BPE files.")
    flags.DEFINE_string("export_base", None, "Folder holding <model_name>/<version>/.")
    flags.DEFINE_string("model_name", "", "Served model name ('' = the task, or gpt_lm).")
    flags.DEFINE_string("task", "", "Task name ('' = the model's; empty for the GPT-1 LM).")
    flags.DEFINE_integer("seq_length", 0, "Tokens per sequence (0 = the model's).")
    flags.DEFINE_string("vocab_file", "", "BERT WordPiece vocab ('' = the model's).")
    flags.DEFINE_string("bpe_encoder_file", "", "GPT-1 BPE encoder JSON ('' = the model's).")
    flags.DEFINE_string("bpe_merges_file", "", "GPT-1 BPE merges ('' = the model's).")
    flags.DEFINE_bool("lower_case", True, "Uncased WordPiece (default: the model's).")
    flags.DEFINE_bool("ids_only", False, "Export only serving_ids (core TensorFlow ops only).")
    flags.DEFINE_integer("max_query_length", 0, "SQuAD question pieces (0 = the model's).")
    flags.DEFINE_integer("max_answer_length", 0, "SQuAD answer pieces (0 = the model's).")
    flags.DEFINE_integer("max_new_tokens_limit", 0,
                         "GPT-1 LM: the most tokens one `generate` request may ask for; larger "
                         "requests are refused (0 = --seq_length).")
    flags.DEFINE_enum("serving_precision", "float32", ["float32", "bfloat16"],
                      "Compute dtype of the exported graph: bfloat16 runs the matmuls in bf16 "
                      "(float32 weights and outputs; faster on AVX512-BF16 / AMX CPUs, outputs "
                      "~1e-2 from float32's, BUILD_NOTES issue 44).")
    flags.mark_flags_as_required(["model", "export_base"])


def main(argv):
    del argv
    check_keras_file(FLAGS.model)
    source = export.Source(
        FLAGS.model, task=FLAGS.task, seq_length=FLAGS.seq_length, vocab_file=FLAGS.vocab_file,
        bpe_encoder_file=FLAGS.bpe_encoder_file, bpe_merges_file=FLAGS.bpe_merges_file,
        lower_case=FLAGS.lower_case if FLAGS["lower_case"].present else None,
        max_query_length=FLAGS.max_query_length, max_answer_length=FLAGS.max_answer_length,
        max_new_tokens_limit=FLAGS.max_new_tokens_limit)
    path = export.export_from_source(source, FLAGS.export_base, FLAGS.model_name,
                                     ids_only=FLAGS.ids_only,
                                     precision=FLAGS.serving_precision)
    info = export.read_export_info(path)
    logging.info("exported %s (signatures %s; custom ops: %s)", path,
                 ", ".join(info["signatures"]), ", ".join(info["custom_ops"]) or "none")
    print(path)


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
