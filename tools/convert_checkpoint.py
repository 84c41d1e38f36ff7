r"""Converts checkpoints between formats.

  bert-gpt-convert --from_format=hf_bert --input=path/to/hf_folder --to_format=keras \
      --output=out/minilm
  bert-gpt-convert --from_format=tf1_bert --input=uncased_L-12_H-768_A-12 --to_format=hf_bert \
      --output=out/hf
  bert-gpt-convert --from_format=openai_gpt --input=finetune-transformer-lm/model \
      --to_format=keras --output=out/gpt1

Formats in: hf_bert, tf1_bert, openai_gpt, hf_gpt, keras (our .keras file, or a pretraining
model_dir), found from the files when --from_format is not given
(tfmodels.checkpoints.formats, the dispatch fine-tuning's --init_checkpoint uses too).
Formats out: keras (model.keras plus the vocabulary), hf_bert, keras_hub_bert (.weights.h5).
Mismatches fail with one message listing every difference; outputs are written to a
temporary folder and renamed, so a failed conversion leaves nothing behind.
"""
import os
import shutil

from absl import flags, logging

from tfmodels.bert import BertEncoder, BertPretrainer
from tfmodels.files import atomic_directory
from tfmodels.checkpoints.formats import CHECKPOINT_FORMATS, load_checkpoint_and_vocab
from tfmodels.checkpoints.hf_bert import save_hf_bert
from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    """Flags are defined when the tool runs, not on import: tests import these functions
    next to other tools that use the same flag names."""
    flags.DEFINE_enum("from_format", None, [f for f in CHECKPOINT_FORMATS if f != "random"],
                      "Input format (default: found from the input's files).")
    flags.DEFINE_enum("to_format", "keras", ["keras", "hf_bert", "keras_hub_bert"], "Output format.")
    flags.DEFINE_string("input", None, "Input folder (or .keras file).")
    flags.DEFINE_string("output", None, "Output folder.")
    flags.DEFINE_string("vocab_file", None, "Vocabulary to ship with the output when the input "
                        "has none (openai_gpt, hf_gpt, keras).")
    flags.mark_flags_as_required(["input", "output"])


def convert(from_format: str, to_format: str, input_path: str, output: str,
            vocab_file: str = None) -> str:
    """Writes the checkpoint at `input_path` (`from_format`, or None: detected) to `output` in
    `to_format`; returns `output`."""
    if not input_path:
        raise ValueError("--input is empty: pass the checkpoint folder or .keras file")
    model, vocab = load_checkpoint_and_vocab(input_path, from_format or None)
    vocab = vocab_file or vocab
    is_bert = isinstance(model, (BertEncoder, BertPretrainer))
    if to_format in ("hf_bert", "keras_hub_bert") and not is_bert:
        raise ValueError(f"--to_format={to_format} needs a BERT model, got {type(model).__name__}")
    if to_format == "hf_bert":
        if not vocab:
            raise ValueError("--to_format=hf_bert needs a vocabulary: pass --vocab_file")
        save_hf_bert(model, vocab, output)
        return output
    with atomic_directory(output) as temp:
        if to_format == "keras":
            model.save(os.path.join(temp, "model.keras"))
        else:
            try:  # keras-hub is the `interop` extra: imported only for this format
                from tfmodels.checkpoints.keras_hub_bert import to_keras_hub
            except ImportError as error:
                raise ValueError("--to_format=keras_hub_bert needs keras-hub: pip install "
                                 "'.[interop]'") from error
            encoder = model.encoder if isinstance(model, BertPretrainer) else model
            to_keras_hub(encoder).save_weights(os.path.join(temp, "model.weights.h5"))
        if vocab:
            shutil.copyfile(vocab, os.path.join(temp, os.path.basename(vocab)))
    return output


def main(argv):
    del argv
    output = convert(FLAGS.from_format, FLAGS.to_format, FLAGS.input, FLAGS.output,
                     FLAGS.vocab_file)
    logging.info("wrote %s", output)


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
