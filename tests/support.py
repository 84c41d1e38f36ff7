"""Plain helpers the test modules share (fixtures are in conftest.py)."""
import pathlib

import numpy as np

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
SEQ = 64          # sequence length of the shared pretraining records


def finetune_config(**settings):
    """FinetuneConfig in float32 unless `mixed_precision` is given: the binaries default to
    auto (bf16 where the CPU is fast at it), but most tests check logic, not precision, and
    compare float32 numbers."""
    from finetune.config import FinetuneConfig
    return FinetuneConfig(**{"mixed_precision": "float32", **settings})


def pretrain_config(**settings):
    """PretrainConfig in float32 unless `mixed_precision` is given (see finetune_config)."""
    from pretraining.trainer import PretrainConfig
    return PretrainConfig(**{"mixed_precision": "float32", **settings})


def QUIET(message):
    """A `log` callback that drops every message."""
    del message


def gpt_inputs(shape, seed=0, lengths=None, vocab_size=100):
    """GPT-1 features [..., s] of random ids below vocab_size, rows of `lengths` real tokens
    (default: full), classify_position at the last real token."""
    rng = np.random.default_rng(seed)
    seq = shape[-1]
    lengths = np.full(shape[:-1], seq) if lengths is None else np.asarray(lengths)
    mask = (np.arange(seq) < lengths[..., None]).astype("int32")
    return {"input_ids": (rng.integers(1, vocab_size, size=shape) * mask).astype("int32"),
            "input_mask": mask, "classify_position": (lengths - 1).astype("int32")}
