"""Which checkpoint format a path holds, and loading it: the one dispatch that fine-tuning's
`--init_checkpoint`, the Python API, zero-shot scoring and `bert-gpt-convert` share.

  random      "" (no checkpoint: fine-tuning initialises from a config)
  keras       a .keras file, or a pretraining model_dir holding pretrained.keras
  hf_bert     config.json (model_type bert) + model.safetensors (+ vocab.txt)
  hf_gpt      config.json (model_type openai-gpt) + model.safetensors
  tf1_bert    bert_config.json + bert_model.ckpt (+ vocab.txt)
  openai_gpt  params_shapes.json + params_*.npy (the original GPT-1 release)

`preset:NAME` (a released checkpoint by name: tfmodels/presets.py) stands for the preset's
cached folder, fetched and converted on first use, wherever these functions take a path.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

import keras

from tfmodels.model_files import check_keras_file
from tfmodels.presets import resolve_checkpoint

CHECKPOINT_FORMATS = ("random", "keras", "hf_bert", "tf1_bert", "openai_gpt", "hf_gpt")
# The architecture a format can only hold (a .keras file may hold any).
FORMAT_ARCHITECTURE = {"hf_bert": "bert", "tf1_bert": "bert", "openai_gpt": "gpt",
                       "hf_gpt": "gpt"}
# GPT-1 BPE files found beside a checkpoint, in this order.
BPE_FILE_PAIRS = (("encoder_bpe_40000.json", "vocab_40000.bpe"),  # the OpenAI release
                  ("vocab.json", "merges.txt"))                    # Hugging Face openai-gpt


def detect_checkpoint_format(path: str) -> str:
    """The format of the checkpoint at `path`, from the files present (CHECKPOINT_FORMATS).

    "" -> random; *.keras or a folder with pretrained.keras -> keras; params_shapes.json ->
    openai_gpt; bert_config.json -> tf1_bert; config.json + model.safetensors -> hf_bert or
    hf_gpt by its model_type (or its field names); `preset:NAME` -> keras (its cached folder).
    """
    path = resolve_checkpoint(path)
    if not path:
        return "random"
    if os.path.isfile(path):
        if path.endswith(".keras"):
            return "keras"
        raise ValueError(f"init_checkpoint {path} is a file but not a .keras model; pass a "
                         "checkpoint folder or a .keras file")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"init_checkpoint {path} does not exist")
    has = lambda name: os.path.isfile(os.path.join(path, name))
    if has("params_shapes.json"):
        return "openai_gpt"
    if has("bert_config.json"):
        return "tf1_bert"
    if has("config.json") and has("model.safetensors"):
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            hf = json.load(f)
        model_type = hf.get("model_type", "")
        if model_type == "bert" or (not model_type and "hidden_size" in hf):
            return "hf_bert"
        if model_type == "openai-gpt" or (not model_type and "n_embd" in hf):
            return "hf_gpt"
        raise ValueError(f"{path}/config.json: model_type {model_type!r} is neither 'bert' nor "
                         "'openai-gpt'")
    if has("pretrained.keras"):
        return "keras"
    raise ValueError(
        f"cannot tell the checkpoint format of {path}: expected config.json + "
        "model.safetensors (Hugging Face BERT / openai-gpt), bert_config.json + bert_model.ckpt "
        "(TF1 BERT), params_shapes.json + params_*.npy (OpenAI GPT-1), pretrained.keras, or a "
        ".keras file")


def load_checkpoint_and_vocab(path: str, fmt: Optional[str] = None, num_heads: int = 12
                              ) -> Tuple[keras.Model, Optional[str]]:
    """(the model a checkpoint holds, the WordPiece vocabulary file it ships or None).

    The model is a BertEncoder / BertPretrainer, a GptLanguageModel, or what a .keras file
    holds (a .keras file of fine-tuning's task models needs `finetune.models` imported first,
    which registers them). `fmt` defaults to `detect_checkpoint_format(path)`; `num_heads` is
    the OpenAI release's (its files do not record it).
    """
    path = resolve_checkpoint(path)
    fmt = fmt or detect_checkpoint_format(path)
    if fmt == "keras":
        vocab = None
        if os.path.isdir(path):
            # A folder may ship its vocabulary beside pretrained.keras (a cached preset does).
            vocab = os.path.join(path, "vocab.txt")
            vocab = vocab if os.path.isfile(vocab) else None
            path = os.path.join(path, "pretrained.keras")
        check_keras_file(path)  # Keras would call a cut-short file "not found"
        return keras.saving.load_model(path, compile=False), vocab
    if fmt == "hf_bert":
        from tfmodels.checkpoints.hf_bert import load_hf_bert
        return load_hf_bert(path)
    if fmt == "tf1_bert":
        from tfmodels.checkpoints.tf1_bert import load_tf1_bert
        return load_tf1_bert(path)
    if fmt == "openai_gpt":
        from tfmodels.checkpoints.openai_gpt import load_openai_gpt
        return load_openai_gpt(path, num_heads=num_heads), None
    if fmt == "hf_gpt":
        from tfmodels.checkpoints.hf_gpt import load_hf_gpt
        return load_hf_gpt(path), None
    raise ValueError(f"no checkpoint to load for format {fmt!r}")


def load_checkpoint(path: str, fmt: Optional[str] = None, num_heads: int = 12) -> keras.Model:
    """The model of `load_checkpoint_and_vocab`."""
    return load_checkpoint_and_vocab(path, fmt, num_heads)[0]


# ---- the tokenizer files beside a checkpoint --------------------------------------------

def _checkpoint_folder(path: str) -> str:
    path = resolve_checkpoint(path)
    if not path:
        return ""
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def wordpiece_vocab_file(checkpoint: str = "", vocab_file: str = "") -> str:
    """`vocab_file`, else vocab.txt beside the checkpoint; ValueError naming what is missing."""
    folder = _checkpoint_folder(checkpoint)
    vocab = vocab_file or (os.path.join(folder, "vocab.txt") if folder else "")
    if not vocab or not os.path.isfile(vocab):
        where = f" ({vocab} does not exist)" if vocab else ""
        raise ValueError(f"BERT needs a WordPiece vocabulary: pass --vocab_file{where}")
    return vocab


def bpe_files(checkpoint: str = "", encoder_file: str = "", merges_file: str = ""
              ) -> Dict[str, str]:
    """GPT-1's {"encoder_file", "merges_file"}: the given paths, else the OpenAI
    (encoder_bpe_40000.json, vocab_40000.bpe) or Hugging Face (vocab.json, merges.txt) pair
    beside the checkpoint; ValueError naming what is missing."""
    folder = _checkpoint_folder(checkpoint)
    encoder, merges = encoder_file, merges_file
    if not (encoder and merges) and folder:
        for enc_name, merges_name in BPE_FILE_PAIRS:
            if os.path.isfile(os.path.join(folder, enc_name)):
                encoder = encoder or os.path.join(folder, enc_name)
                merges = merges or os.path.join(folder, merges_name)
                break
    for flag, path in (("bpe_encoder_file", encoder), ("bpe_merges_file", merges)):
        if not path or not os.path.isfile(path):
            where = f" ({path} does not exist)" if path else ""
            raise ValueError(f"GPT-1 needs its BPE files: pass --{flag}{where}")
    return {"encoder_file": encoder, "merges_file": merges}
