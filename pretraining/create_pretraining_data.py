r"""Creates pretraining TFRecords from raw text (BERT sentence pairs or GPT windows).

  python -m pretraining.create_pretraining_data --mode=bert \
      --input_files='corpus/*.txt' --output_dir=records/bert128 \
      --vocab_file=vocab.txt --max_seq_length=128 --max_predictions_per_seq=20 \
      --dupe_factor=10 --num_workers=2
  # MLM only (RoBERTa's FULL-SENTENCES): no NSP labels, pretrain with --nouse_nsp
  python -m pretraining.create_pretraining_data --mode=bert --packing=full_sentences ...
  python -m pretraining.create_pretraining_data --mode=gpt --input_files=... \
      --bpe_encoder_file=encoder_bpe_40000.json --bpe_merges_file=vocab_40000.bpe --n_ctx=512

Records use google-research/bert's feature names and dtypes (BERT) or an `input_ids`
feature of n_ctx tokens (GPT), plus `doc_id` and `text_span` (which text a record holds,
for tools/data_coverage). A shard holds one dupe pass of its text before the next
(--record_order). A rerun with the same flags resumes, skipping finished shards; one with
other settings or inputs into the same --output_dir is refused.
"""
from absl import flags

from pretraining.create_data import DataConfig, create_pretraining_data
from tfmodels.cli import run_binary
from tfmodels.config_flags import dataclass_from_flags, define_flags_from_dataclass

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list("input_files", None, "Comma-separated globs of text files.")
    flags.DEFINE_string("output_dir", None, "Folder for the shards and manifest.json.")
    flags.DEFINE_integer("num_workers", 2, "Worker processes building instances.")
    define_flags_from_dataclass(DataConfig)
    flags.mark_flags_as_required(["input_files", "output_dir"])


def main(argv):
    del argv
    config = dataclass_from_flags(DataConfig)
    create_pretraining_data(FLAGS.input_files, FLAGS.output_dir, config,
                            num_workers=FLAGS.num_workers)


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
