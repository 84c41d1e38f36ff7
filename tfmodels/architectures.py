"""The names of the networks and of the input layouts they read, in one place.

  architecture  which network: "bert" | "gpt" | "lstm" (GPT-1's LSTM baseline, tfmodels.lstm).
                Pretraining's --model, fine-tuning's --model and the `architecture` key of a
                saved config (tfmodels.configs) all take these names.
  input format  which tokenizer, token layout and feature keys a model reads
                (tfmodels.preprocessing): "bert" (WordPiece, `[CLS] A [SEP] B [SEP]`, segment
                ids) | "gpt" (GPT-1 BPE, `start A delimiter B classify`). The LSTM reads
                GPT-1's. Pretraining records' --mode is an input format too.

Every other spelling of these sets (tuples in validators, `in ("gpt", "lstm")` tests) goes
through the names and functions here.
"""
from __future__ import annotations

ARCHITECTURES = ("bert", "gpt", "lstm")
INPUT_FORMATS = ("bert", "gpt")
# The LSTM baseline uses GPT-1's BPE, layouts and records ("the same framework", GPT-1 §5).
_INPUT_FORMAT_OF = {"bert": "bert", "gpt": "gpt", "lstm": "gpt"}


def check_architecture(architecture: str, what: str = "architecture") -> str:
    """`architecture` itself if it is one of ARCHITECTURES, else a ValueError naming `what`
    (the flag or field) and the allowed values."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{what} must be one of {', '.join(ARCHITECTURES)}, "
                         f"got {architecture!r}")
    return architecture


def check_input_format(input_format: str, what: str = "input_format") -> str:
    """`input_format` itself if it is one of INPUT_FORMATS, else a ValueError naming `what`."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"{what} must be one of {', '.join(INPUT_FORMATS)}, "
                         f"got {input_format!r}")
    return input_format


def input_format(architecture: str) -> str:
    """The input format an architecture reads: "bert" for bert, "gpt" for gpt and lstm."""
    return _INPUT_FORMAT_OF[check_architecture(architecture)]
