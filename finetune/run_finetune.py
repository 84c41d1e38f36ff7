r"""Fine-tunes BERT or GPT-1 on any registered task (finetune.tasks) and evaluates it on dev.

  # BERT: the paper's sweep (5e-5, 4e-5, 3e-5, 2e-5), 3 epochs, batch 32, best lr on dev
  python -m finetune.run_finetune --task=mrpc --model=bert \
      --init_checkpoint=path/to/hf_bert_folder --data_dir=glue/MRPC --output_dir=runs/mrpc \
      --seq_length=128 --seeds=0,1,2
  # GPT-1: lr 6.25e-5, 0.2% warmup, aux LM lambda 0.5, from the OpenAI release
  python -m finetune.run_finetune --task=story_cloze --model=gpt \
      --init_checkpoint=finetune-transformer-lm/model --data_dir=storycloze \
      --output_dir=runs/cloze
  # GPT-1's LSTM baseline, fine-tuned the same way from pretraining.run_pretraining --model=lstm
  python -m finetune.run_finetune --task=sst2 --model=lstm --init_checkpoint=runs/lstm \
      --bpe_encoder_file=encoder_bpe_40000.json --bpe_merges_file=vocab_40000.bpe \
      --data_dir=glue/SST-2 --output_dir=runs/lstm_sst2
  # SQuAD v1.1 from one file (no dev file: the last 10% of it is held out)
  python -m finetune.run_finetune --task=squad_v1 --init_checkpoint=... \
      --data_dir=squad/train-v1.1-subset.json --seq_length=384 --learning_rates=3e-5

Writes <output_dir>/results.json (every run, per-lr mean/std, the chosen lr, s/step),
<output_dir>/model.keras and <output_dir>/predictions/{eval,test}/ (GLUE leaderboard TSVs,
SQuAD JSON, JSONL). All logic is in finetune.trainer.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags

from finetune.config import FinetuneConfig
from finetune.trainer import run_finetune
from tfmodels.cli import run_binary
from tfmodels.config_flags import dataclass_from_flags, define_flags_from_dataclass
from tfmodels.training import configure_cpu_devices


def define_flags():
    define_flags_from_dataclass(FinetuneConfig)
    # Fine-tuning's --strategy was the freezing policy, pretraining's the tf.distribute
    # strategy: one name for two things. Refused with the new name, not silently ignored.
    flags.DEFINE_string("strategy", None, "Renamed --freezing (the freezing policy).")


def main(argv):
    del argv
    if flags.FLAGS["strategy"].present:
        raise app.UsageError("--strategy is now --freezing (full | frozen | top_k | gradual); "
                             "tf.distribute strategies are --distribution_strategy")
    config = dataclass_from_flags(FinetuneConfig)
    # Process-wide, and only possible before TensorFlow starts: the binary's to set.
    configure_cpu_devices(config.num_cpu_devices)
    run_finetune(config)


def run():
    run_binary(main, define_flags)


if __name__ == "__main__":
    run()
