"""Converts checkpoints between formats.

  bert-gpt-convert --from_format=hf_bert --input=path/to/hf_folder --to_format=keras \
      --output=out/minilm
  bert-gpt-convert --from_format=tf1_bert --input=uncased_L-12_H-768_A-12 --to_format=hf_bert \
      --output=out/hf
  bert-gpt-convert --from_format=openai_gpt --input=finetune-transformer-lm/model \
      --to_format=keras --output=out/gpt1

Formats in: hf_bert, tf1_bert, openai_gpt, hf_gpt, keras (our .keras file).
Formats out: keras (model.keras plus the vocabulary), hf_bert, keras_hub_bert (.weights.h5).
Mismatches fail with one message listing every difference; outputs are written to a
temporary folder and renamed, so a failed conversion leaves nothing behind.
"""
import os
import shutil

import keras
from absl import flags, logging

from tfmodels.bert import BertEncoder, BertPretrainer
from tfmodels.checkpoints import slots as slot_lib
from tfmodels.checkpoints.hf_bert import load_hf_bert, save_hf_bert
from tfmodels.checkpoints.hf_gpt import load_hf_gpt
from tfmodels.checkpoints.openai_gpt import load_openai_gpt
from tfmodels.checkpoints.tf1_bert import load_tf1_bert
from tfmodels.cli import run_binary

FLAGS = flags.FLAGS


def define_flags():
    """Flags are defined when the tool runs, not on import: tests import these functions
    next to other tools that use the same flag names."""
    flags.DEFINE_enum("from_format", None, ["hf_bert", "tf1_bert", "openai_gpt", "hf_gpt", "keras"],
                      "Input format.")
    flags.DEFINE_enum("to_format", "keras", ["keras", "hf_bert", "keras_hub_bert"], "Output format.")
    flags.DEFINE_string("input", None, "Input folder (or .keras file).")
    flags.DEFINE_string("output", None, "Output folder.")
    flags.DEFINE_string("vocab_file", None, "Vocabulary to ship with the output when the input "
                        "has none (openai_gpt, hf_gpt, keras).")


def load(from_format: str, path: str):
    """-> (model, vocabulary file or None)."""
    if from_format == "hf_bert":
        return load_hf_bert(path)
    if from_format == "tf1_bert":
        return load_tf1_bert(path)
    if from_format == "openai_gpt":
        return load_openai_gpt(path), None
    if from_format == "hf_gpt":
        return load_hf_gpt(path), None
    return keras.saving.load_model(path), None


def convert(from_format: str, to_format: str, input_path: str, output: str,
            vocab_file: str = None) -> str:
    model, vocab = load(from_format, input_path)
    vocab = vocab_file or vocab
    is_bert = isinstance(model, (BertEncoder, BertPretrainer))
    if to_format in ("hf_bert", "keras_hub_bert") and not is_bert:
        raise ValueError(f"--to_format={to_format} needs a BERT model, got {type(model).__name__}")
    if to_format == "hf_bert":
        if not vocab:
            raise ValueError("--to_format=hf_bert needs a vocabulary: pass --vocab_file")
        save_hf_bert(model, vocab, output)
        return output
    with slot_lib.atomic_directory(output) as temp:
        if to_format == "keras":
            model.save(os.path.join(temp, "model.keras"))
        else:
            try:  # keras-hub is the `interop` extra: imported only for this format
                from tfmodels.checkpoints.keras_hub_bert import to_keras_hub
            except ImportError as error:
                raise ValueError("--to_format=keras_hub_bert needs keras-hub: pip install -e "
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
    define_flags()
    flags.mark_flags_as_required(["from_format", "input", "output"])
    run_binary(main)


if __name__ == "__main__":
    run()
