"""Our models' variables under stable canonical names, and checked assignment into them."""
from __future__ import annotations

from typing import Dict

import numpy as np

from tfmodels.bert import BertEncoder, BertPretrainer
from tfmodels.gpt import GptDecoder, GptLanguageModel

# Per Transformer block: canonical suffix -> (sublayer attribute path, variable name).
BLOCK_SLOTS = {
    "qkv/kernel": ("attention.qkv", "kernel"),
    "qkv/bias": ("attention.qkv", "bias"),
    "attention_output/kernel": ("attention.output_dense", "kernel"),
    "attention_output/bias": ("attention.output_dense", "bias"),
    "attention_norm/gamma": ("attention_layer_norm", "gamma"),
    "attention_norm/beta": ("attention_layer_norm", "beta"),
    "intermediate/kernel": ("intermediate_dense", "kernel"),
    "intermediate/bias": ("intermediate_dense", "bias"),
    "output/kernel": ("output_dense", "kernel"),
    "output/bias": ("output_dense", "bias"),
    "output_norm/gamma": ("output_layer_norm", "gamma"),
    "output_norm/beta": ("output_layer_norm", "beta"),
}


def _attr(obj, dotted: str):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def _block_slots(layers) -> Dict[str, object]:
    slots = {}
    for i, layer in enumerate(layers):
        for key, (path, variable) in BLOCK_SLOTS.items():
            slots[f"layer_{i}/{key}"] = getattr(_attr(layer, path), variable)
    return slots


def bert_slots(model) -> Dict[str, object]:
    """Canonical name -> variable for a BertEncoder, or a BertPretrainer (heads included)."""
    encoder = model.encoder if isinstance(model, BertPretrainer) else model
    if not isinstance(encoder, BertEncoder):
        raise TypeError(f"expected a BertEncoder or BertPretrainer, got {type(model).__name__}")
    slots = {
        "token_embedding": encoder.token_embedding.embeddings,
        "segment_embedding": encoder.segment_embedding.embeddings,
        "position_embedding": encoder.position_embedding.embeddings,
        "embedding_norm/gamma": encoder.embedding_layer_norm.gamma,
        "embedding_norm/beta": encoder.embedding_layer_norm.beta,
        **_block_slots(encoder.transformer_layers),
        "pooler/kernel": encoder.pooler.kernel,
        "pooler/bias": encoder.pooler.bias,
    }
    if isinstance(model, BertPretrainer):
        slots.update({
            "mlm/transform/kernel": model.mlm_head.transform.kernel,
            "mlm/transform/bias": model.mlm_head.transform.bias,
            "mlm/norm/gamma": model.mlm_head.layer_norm.gamma,
            "mlm/norm/beta": model.mlm_head.layer_norm.beta,
            "mlm/output_bias": model.mlm_head.output_bias,
            "nsp/kernel": model.nsp_head.kernel,
            "nsp/bias": model.nsp_head.bias,
        })
    return slots


def gpt_slots(model) -> Dict[str, object]:
    """Canonical name -> variable for a GptDecoder or GptLanguageModel (the LM head is tied)."""
    decoder = model.decoder if isinstance(model, GptLanguageModel) else model
    if not isinstance(decoder, GptDecoder):
        raise TypeError(f"expected a GptDecoder or GptLanguageModel, got {type(model).__name__}")
    return {"token_embedding": decoder.token_embedding.embeddings,
            "position_embedding": decoder.position_embedding.embeddings,
            **_block_slots(decoder.transformer_layers)}


def read_slots(slots: Dict[str, object]) -> Dict[str, np.ndarray]:
    return {name: np.asarray(variable.numpy()) for name, variable in slots.items()}


def assign(slots: Dict[str, object], arrays: Dict[str, np.ndarray], source: str,
           allow_missing=()) -> None:
    """Writes `arrays` into `slots` after checking names and shapes.

    Every missing, unexpected or mis-shaped tensor is reported in ONE ValueError naming
    `source`; nothing is assigned unless everything matches, so a failed conversion never
    leaves a half-loaded model.
    """
    problems = []
    missing = sorted(set(slots) - set(arrays) - set(allow_missing))
    unexpected = sorted(set(arrays) - set(slots))
    if missing:
        problems.append(f"missing tensors: {missing}")
    if unexpected:
        problems.append(f"unexpected tensors: {unexpected}")
    for name in sorted(set(slots) & set(arrays)):
        want, got = tuple(slots[name].shape), tuple(np.shape(arrays[name]))
        if want != got:
            problems.append(f"{name}: shape {got} in the checkpoint, {want} in the model")
    if problems:
        raise ValueError(f"cannot load {source}:\n  " + "\n  ".join(problems))
    for name, array in arrays.items():
        slots[name].assign(np.asarray(array, dtype=slots[name].dtype))


def check_config(source: str, expected: Dict[str, object], found: Dict[str, object]) -> None:
    """One error listing every config field that differs (e.g. vocab size vs vocab file)."""
    diffs = [f"{k}: {found[k]} in {source}, {v} expected" for k, v in expected.items()
             if k in found and found[k] != v]
    if diffs:
        raise ValueError(f"configuration mismatch for {source}:\n  " + "\n  ".join(diffs))
