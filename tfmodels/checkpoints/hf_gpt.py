"""Hugging Face `openai-gpt` checkpoints (safetensors + config.json) into our GPT-1.

HF's Conv1D weights are already [in, out]. `afn: gelu` in HF's port is the tanh form
(`gelu_new`), as in the original. Token rows beyond the checkpoint's vocabulary (our added
tokens, when the checkpoint has none) are drawn from N(0, 0.02) with a fixed seed.
"""
from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import load_file

from tfmodels import configs
from tfmodels.checkpoints import slots as slot_lib
from tfmodels.gpt import GptLanguageModel

LAYER = {
    "qkv/kernel": "attn.c_attn.weight", "qkv/bias": "attn.c_attn.bias",
    "attention_output/kernel": "attn.c_proj.weight", "attention_output/bias": "attn.c_proj.bias",
    "attention_norm/gamma": "ln_1.weight", "attention_norm/beta": "ln_1.bias",
    "intermediate/kernel": "mlp.c_fc.weight", "intermediate/bias": "mlp.c_fc.bias",
    "output/kernel": "mlp.c_proj.weight", "output/bias": "mlp.c_proj.bias",
    "output_norm/gamma": "ln_2.weight", "output_norm/beta": "ln_2.bias",
}
ACTIVATIONS = {"gelu": True, "gelu_new": True}
IGNORED = ("lm_head.weight", "position_ids")  # tied to tokens_embed; a buffer


def load_hf_gpt(folder: str, num_special_tokens: int = 3, seed: int = 0) -> GptLanguageModel:
    config_path = os.path.join(folder, "config.json")
    weights_path = os.path.join(folder, "model.safetensors")
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise ValueError(f"{folder} is not a Hugging Face openai-gpt folder: {path} is missing")
    with open(config_path, encoding="utf-8") as f:
        hf = json.load(f)
    if hf.get("afn", "gelu") not in ACTIVATIONS:
        raise ValueError(f"{config_path}: unsupported afn {hf.get('afn')!r}")
    tensors = load_file(weights_path)
    prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
    tensors = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()
               if not k.endswith(IGNORED)}
    checkpoint_vocab = hf["vocab_size"]
    cfg = configs.GptConfig(
        vocab_size=checkpoint_vocab + num_special_tokens, hidden_size=hf["n_embd"],
        num_layers=hf["n_layer"], num_heads=hf["n_head"], intermediate_size=4 * hf["n_embd"],
        max_positions=hf["n_positions"], layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        hidden_dropout=hf.get("resid_pdrop", 0.1), attention_dropout=hf.get("attn_pdrop", 0.1),
        gelu_approximate=ACTIVATIONS[hf.get("afn", "gelu")])
    arrays = {}
    tokens = tensors.pop("tokens_embed.weight", None)
    if tokens is not None:
        rng = np.random.default_rng(seed)
        special = rng.normal(0.0, 0.02, (num_special_tokens, cfg.hidden_size))
        arrays["token_embedding"] = np.concatenate([tokens, special.astype(tokens.dtype)], 0)
    if "positions_embed.weight" in tensors:
        arrays["position_embedding"] = tensors.pop("positions_embed.weight")
    for i in range(cfg.num_layers):
        for key, name in LAYER.items():
            if f"h.{i}.{name}" in tensors:
                arrays[f"layer_{i}/{key}"] = tensors.pop(f"h.{i}.{name}")
    model = GptLanguageModel(cfg)
    # Leftover HF tensors become "unexpected" entries in assign's single error report.
    arrays.update({f"hf:{name}": value for name, value in tensors.items()})
    slot_lib.assign(slot_lib.gpt_slots(model), arrays, weights_path)
    return model
