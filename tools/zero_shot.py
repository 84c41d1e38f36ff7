r"""GPT-1's zero-shot heuristics (Section 5, Figure 2 right) on a pretrained LM: the binary.
The heuristics, `LmScorer` and the threshold search are finetune.zero_shot.

  python -m tools.zero_shot --checkpoint=runs/gpt/pretrained.keras \
      --bpe_encoder_file=../shared/data/gpt1_openai/encoder_bpe_40000.json \
      --bpe_merges_file=../shared/data/gpt1_openai/vocab_40000.bpe \
      --tasks=cola,sst2,story_cloze --max_examples=500 --output_json=zero_shot.json

--checkpoint: a `.keras` GptLanguageModel (or any saved model holding a GPT-1 decoder), an
OpenAI GPT-1 `.npy` release or a Hugging Face openai-gpt folder.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# The library names stay importable from here (the ablation workspace imports them).
from finetune.zero_shot import ZeroShotConfig, run_zero_shot  # noqa: E402,F401


def main(argv):
    del argv
    from tfmodels.config_flags import dataclass_from_flags
    run_zero_shot(dataclass_from_flags(ZeroShotConfig))


def run():
    from tfmodels.cli import run_binary
    from tfmodels.config_flags import define_flags_from_dataclass
    define_flags_from_dataclass(ZeroShotConfig)
    run_binary(main)


if __name__ == "__main__":
    run()
