r"""Pretrains BERT (MLM + NSP) or GPT-1 (causal LM) from TFRecords made by create_pretraining_data.

  # BERT phase 1 (length 128), then phase 2 (length 512) from phase 1's weights
  python -m pretraining.run_pretraining --model=bert --model_config=bert_base \
      --input_files='records/bert128/*.tfrecord' --model_dir=runs/bert_p1 \
      --seq_length=128 --max_predictions_per_seq=20 --global_batch_size=256 \
      --train_steps=900000 --warmup_steps=10000 --learning_rate=1e-4 --strategy=mirrored
  python -m pretraining.run_pretraining ... --seq_length=512 --max_predictions_per_seq=80 \
      --init_checkpoint=runs/bert_p1 --model_dir=runs/bert_p2 --train_steps=100000
  # GPT-1: Adam 2.5e-4, 2000 warmup steps, cosine decay, 64 x 512 tokens
  python -m pretraining.run_pretraining --model=gpt --model_config=gpt1 --seq_length=512 \
      --input_files='records/gpt/*.tfrecord' --model_dir=runs/gpt --global_batch_size=64 \
      --learning_rate=2.5e-4 --warmup_steps=2000 --decay=cosine
  # GPT-1's LSTM baseline (Section 5): the same records, loss and schedule, 1 x 2048 LSTM
  # (the default --model_config is bert_base, so name an lstm_* config: lstm_2048 is the
  # paper's, lstm_small a CPU-sized one)
  python -m pretraining.run_pretraining --model=lstm --model_config=lstm_2048 \
      --seq_length=512 --input_files='records/gpt/*.tfrecord' --model_dir=runs/lstm \
      --global_batch_size=64 --learning_rate=2.5e-4 --warmup_steps=2000 --decay=cosine

Rerunning the same command after a crash resumes from the newest checkpoint in --model_dir.
Multi-worker: run the same command on every worker with TF_CONFIG set and
--strategy=multi_worker. Metrics go to <model_dir>/metrics.jsonl and TensorBoard
(<model_dir>/train); the final model to <model_dir>/pretrained.keras.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pretraining.trainer import PretrainConfig, run_pretraining
from tfmodels.cli import run_binary
from tfmodels.config_flags import dataclass_from_flags, define_flags_from_dataclass
from tfmodels.training import configure_cpu_devices


def define_flags():
    define_flags_from_dataclass(PretrainConfig)


def main(argv):
    del argv
    config = dataclass_from_flags(PretrainConfig)
    # Process-wide, and only possible before TensorFlow starts: the binary's to set.
    configure_cpu_devices(config.num_cpu_devices)
    run_pretraining(config)


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
