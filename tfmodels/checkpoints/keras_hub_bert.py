"""keras-hub `BertBackbone` weights to and from our BertEncoder.

keras-hub keeps query/key/value as separate EinsumDense kernels [hidden, heads, head_size]
and the attention output as [heads, head_size, hidden]; ours are fused 2-D kernels.

keras-hub's BertBackbone always uses the tanh GELU. Weights trained with the exact GELU
(Hugging Face "gelu", e.g. all-MiniLM-L6-v2) therefore compute a slightly different function
there (about 2e-3 max-abs on MiniLM's outputs); `from_keras_hub` gives our encoder the tanh
form so that it reproduces the keras-hub model exactly.
"""
from __future__ import annotations

from typing import Dict

import keras_hub
import numpy as np

from tfmodels import configs
from tfmodels.bert import BertEncoder
from tfmodels.checkpoints import slots as slot_lib

EMBEDDINGS = {
    "token_embedding": "token_embedding/embeddings",
    "segment_embedding": "segment_embedding/embeddings",
    "position_embedding": "position_embedding/embeddings",
    "embedding_norm/gamma": "embeddings_layer_norm/gamma",
    "embedding_norm/beta": "embeddings_layer_norm/beta",
    "pooler/kernel": "pooled_dense/kernel",
    "pooler/bias": "pooled_dense/bias",
}
LAYER = {
    "attention_norm/gamma": "self_attention_layer_norm/gamma",
    "attention_norm/beta": "self_attention_layer_norm/beta",
    "intermediate/kernel": "feedforward_intermediate_dense/kernel",
    "intermediate/bias": "feedforward_intermediate_dense/bias",
    "output/kernel": "feedforward_output_dense/kernel",
    "output/bias": "feedforward_output_dense/bias",
    "output_norm/gamma": "feedforward_layer_norm/gamma",
    "output_norm/beta": "feedforward_layer_norm/beta",
}
ATTENTION = "self_attention_layer"


def _weights_by_path(backbone) -> Dict[str, object]:
    return {w.path: w for w in backbone.weights}


def backbone_for(cfg: configs.BertConfig):
    """A keras-hub BertBackbone with our config's sizes (its GELU is always the tanh form)."""
    return keras_hub.models.BertBackbone(
        vocabulary_size=cfg.vocab_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        hidden_dim=cfg.hidden_size, intermediate_dim=cfg.intermediate_size,
        dropout=cfg.hidden_dropout, max_sequence_length=cfg.max_positions,
        num_segments=cfg.type_vocab_size)


def keras_hub_to_canonical(backbone) -> Dict[str, np.ndarray]:
    weights = {k: np.asarray(v.numpy()) for k, v in _weights_by_path(backbone).items()}
    out = {key: weights.pop(path) for key, path in EMBEDDINGS.items()}
    for i in range(backbone.num_layers):
        layer = f"transformer_layer_{i}"
        for key, path in LAYER.items():
            out[f"layer_{i}/{key}"] = weights.pop(f"{layer}/{path}")
        parts = [weights.pop(f"{layer}/{ATTENTION}/{p}/kernel") for p in ("query", "key", "value")]
        hidden = parts[0].shape[0]
        out[f"layer_{i}/qkv/kernel"] = np.concatenate([p.reshape(hidden, -1) for p in parts], 1)
        out[f"layer_{i}/qkv/bias"] = np.concatenate(
            [weights.pop(f"{layer}/{ATTENTION}/{p}/bias").reshape(-1)
             for p in ("query", "key", "value")])
        out[f"layer_{i}/attention_output/kernel"] = weights.pop(
            f"{layer}/{ATTENTION}/attention_output/kernel").reshape(-1, hidden)
        out[f"layer_{i}/attention_output/bias"] = weights.pop(
            f"{layer}/{ATTENTION}/attention_output/bias")
    if weights:
        raise ValueError(f"unexpected keras-hub BertBackbone weights: {sorted(weights)}")
    return out


def from_keras_hub(backbone) -> BertEncoder:
    """keras-hub BertBackbone -> our BertEncoder with the same weights."""
    cfg = configs.BertConfig(
        vocab_size=backbone.vocabulary_size, hidden_size=backbone.hidden_dim,
        num_layers=backbone.num_layers, num_heads=backbone.num_heads,
        intermediate_size=backbone.intermediate_dim,
        max_positions=backbone.max_sequence_length, type_vocab_size=backbone.num_segments,
        gelu_approximate=True)
    encoder = BertEncoder(cfg)
    slot_lib.assign(slot_lib.bert_slots(encoder), keras_hub_to_canonical(backbone),
                    "keras-hub BertBackbone")
    return encoder


def to_keras_hub(encoder: BertEncoder):
    """Our BertEncoder -> a keras-hub BertBackbone with the same weights."""
    cfg = encoder.config
    backbone = backbone_for(cfg)
    arrays = slot_lib.read_slots(slot_lib.bert_slots(encoder))
    weights = _weights_by_path(backbone)
    heads, head_size, hidden = cfg.num_heads, cfg.head_size, cfg.hidden_size
    values = {path: arrays[key] for key, path in EMBEDDINGS.items()}
    for i in range(cfg.num_layers):
        layer = f"transformer_layer_{i}"
        for key, path in LAYER.items():
            values[f"{layer}/{path}"] = arrays[f"layer_{i}/{key}"]
        kernels = np.split(arrays[f"layer_{i}/qkv/kernel"], 3, axis=1)
        biases = np.split(arrays[f"layer_{i}/qkv/bias"], 3)
        for name, kernel, bias in zip(("query", "key", "value"), kernels, biases):
            values[f"{layer}/{ATTENTION}/{name}/kernel"] = kernel.reshape(hidden, heads, head_size)
            values[f"{layer}/{ATTENTION}/{name}/bias"] = bias.reshape(heads, head_size)
        values[f"{layer}/{ATTENTION}/attention_output/kernel"] = arrays[
            f"layer_{i}/attention_output/kernel"].reshape(heads, head_size, hidden)
        values[f"{layer}/{ATTENTION}/attention_output/bias"] = arrays[
            f"layer_{i}/attention_output/bias"]
    slot_lib.assign(weights, values, "our BertEncoder")
    return backbone
