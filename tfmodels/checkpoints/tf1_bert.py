"""google-research/bert TF1 checkpoints (`bert_config.json`, `bert_model.ckpt.*`,
`vocab.txt`) into our BERT, pretraining heads included.

TF1 dense kernels are already [in, out]; only `cls/seq_relationship/output_weights`
([2, hidden]) is stored transposed. The original code uses the tanh GELU.
"""
from __future__ import annotations

import json
import os
from typing import Dict

import numpy as np
import tensorflow as tf

from tfmodels import configs
from tfmodels.bert import BertEncoder, BertPretrainer
from tfmodels.checkpoints import slots as slot_lib

EMBEDDINGS = {
    "token_embedding": "bert/embeddings/word_embeddings",
    "segment_embedding": "bert/embeddings/token_type_embeddings",
    "position_embedding": "bert/embeddings/position_embeddings",
    "embedding_norm/gamma": "bert/embeddings/LayerNorm/gamma",
    "embedding_norm/beta": "bert/embeddings/LayerNorm/beta",
    "pooler/kernel": "bert/pooler/dense/kernel",
    "pooler/bias": "bert/pooler/dense/bias",
}
LAYER = {
    "attention_output/kernel": "attention/output/dense/kernel",
    "attention_output/bias": "attention/output/dense/bias",
    "attention_norm/gamma": "attention/output/LayerNorm/gamma",
    "attention_norm/beta": "attention/output/LayerNorm/beta",
    "intermediate/kernel": "intermediate/dense/kernel",
    "intermediate/bias": "intermediate/dense/bias",
    "output/kernel": "output/dense/kernel",
    "output/bias": "output/dense/bias",
    "output_norm/gamma": "output/LayerNorm/gamma",
    "output_norm/beta": "output/LayerNorm/beta",
}
HEADS = {
    "mlm/transform/kernel": "cls/predictions/transform/dense/kernel",
    "mlm/transform/bias": "cls/predictions/transform/dense/bias",
    "mlm/norm/gamma": "cls/predictions/transform/LayerNorm/gamma",
    "mlm/norm/beta": "cls/predictions/transform/LayerNorm/beta",
    "mlm/output_bias": "cls/predictions/output_bias",
    "nsp/kernel": "cls/seq_relationship/output_weights",  # [2, hidden]: transposed
    "nsp/bias": "cls/seq_relationship/output_bias",
}
QKV = ("attention/self/query", "attention/self/key", "attention/self/value")
# Optimizer slots and counters that TF1 training checkpoints carry beside the weights.
IGNORED_SUFFIXES = ("/adam_m", "/adam_v")
IGNORED = ("global_step",)


def variable_names(num_layers: int, with_heads: bool = True) -> Dict[str, str]:
    """Canonical name -> TF1 variable name (QKV parts as `layer_i/q|k|v/kernel|bias`)."""
    names = dict(EMBEDDINGS)
    for i in range(num_layers):
        for key, name in LAYER.items():
            names[f"layer_{i}/{key}"] = f"bert/encoder/layer_{i}/{name}"
        for part, tf1 in zip("qkv", QKV):
            for param in ("kernel", "bias"):
                names[f"layer_{i}/{part}/{param}"] = f"bert/encoder/layer_{i}/{tf1}/{param}"
    if with_heads:
        names.update(HEADS)
    return names


def config_from_tf1(values: Dict) -> configs.BertConfig:
    act = values.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"unsupported hidden_act {act!r} (google-research/bert uses 'gelu')")
    return configs.BertConfig(
        vocab_size=values["vocab_size"], hidden_size=values["hidden_size"],
        num_layers=values["num_hidden_layers"], num_heads=values["num_attention_heads"],
        intermediate_size=values["intermediate_size"],
        max_positions=values["max_position_embeddings"],
        type_vocab_size=values.get("type_vocab_size", 2),
        hidden_dropout=values.get("hidden_dropout_prob", 0.1),
        attention_dropout=values.get("attention_probs_dropout_prob", 0.1),
        gelu_approximate=True, initializer_range=values.get("initializer_range", 0.02))


def load_tf1_bert(folder: str, checkpoint_name: str = "bert_model.ckpt"):
    """Reads a google-research/bert folder -> (BertPretrainer or BertEncoder, vocab path)."""
    config_path = os.path.join(folder, "bert_config.json")
    vocab_path = os.path.join(folder, "vocab.txt")
    prefix = os.path.join(folder, checkpoint_name)
    for path in (config_path, vocab_path, prefix + ".index"):
        if not os.path.isfile(path):
            raise ValueError(f"{folder} is not a google-research/bert folder: {path} is missing")
    with open(config_path, encoding="utf-8") as f:
        cfg = config_from_tf1(json.load(f))
    with open(vocab_path, encoding="utf-8") as f:
        vocab_size = sum(1 for line in f if line.rstrip("\n"))
    slot_lib.check_config(vocab_path, {"vocab_size": cfg.vocab_size}, {"vocab_size": vocab_size})
    reader = tf.train.load_checkpoint(prefix)
    stored = {name for name in reader.get_variable_to_shape_map()
              if not name.endswith(IGNORED_SUFFIXES) and name not in IGNORED}
    has_heads = any(name.startswith("cls/") for name in stored)
    names = variable_names(cfg.num_layers, with_heads=has_heads)
    missing = sorted(set(names.values()) - stored)
    unexpected = sorted(stored - set(names.values()))
    if missing or unexpected:
        raise ValueError(f"cannot read {prefix} as a {cfg.num_layers}-layer BERT:\n"
                         f"  missing variables: {missing[:20]}\n"
                         f"  unexpected variables: {unexpected[:20]}")
    values = {key: reader.get_tensor(name) for key, name in names.items()}
    arrays = {k: v for k, v in values.items() if "/q/" not in k and "/k/" not in k
              and "/v/" not in k}
    for i in range(cfg.num_layers):
        for param in ("kernel", "bias"):
            parts = [values[f"layer_{i}/{p}/{param}"] for p in "qkv"]
            arrays[f"layer_{i}/qkv/{param}"] = np.concatenate(parts, axis=-1)
    if has_heads:
        arrays["nsp/kernel"] = arrays["nsp/kernel"].T
    model = BertPretrainer(cfg) if has_heads else BertEncoder(cfg)
    slot_lib.assign(slot_lib.bert_slots(model), arrays, prefix)
    return model, vocab_path


def canonical_to_tf1(arrays: Dict[str, np.ndarray], num_layers: int) -> Dict[str, np.ndarray]:
    """Canonical arrays -> TF1 variable names and layouts (the inverse of the loader)."""
    has_heads = "nsp/kernel" in arrays
    names = variable_names(num_layers, with_heads=has_heads)
    values = dict(arrays)
    for i in range(num_layers):
        for param in ("kernel", "bias"):
            for part, value in zip("qkv", np.split(values.pop(f"layer_{i}/qkv/{param}"), 3,
                                                   axis=-1)):
                values[f"layer_{i}/{part}/{param}"] = value
    if has_heads:
        values["nsp/kernel"] = values["nsp/kernel"].T
    return {names[key]: value for key, value in values.items()}
