"""The original OpenAI GPT-1 release (openai/finetune-transformer-lm `model/`):
`params_shapes.json` + `params_0.npy` ... `params_9.npy`.

The ten shards are one flat float32 array cut into ten files; it is concatenated, split at
the cumulative sizes of the shapes list and reshaped, as the original `train.py` does. Then:
params[0] positions [n_ctx, 768], params[1] token embeddings [40478, 768], and per layer 12
arrays: c_attn w [1, 768, 2304], b, c_proj w [1, 768, 768], b, ln_1 g, b, c_fc w
[1, 768, 3072], b, c_proj w [1, 3072, 768], b, ln_2 g, b. GPT-1 is post-LN: ln_1 follows
attention, ln_2 the MLP; c_attn's [q | k | v] head-major layout is ours.

The added tokens (start, delimiter, classify) are not in the release (the original code
initialises them when fine-tuning): their rows are drawn from N(0, 0.02) with a fixed seed.
"""
from __future__ import annotations

import json
import os
from typing import List

import numpy as np

from tfmodels import configs
from tfmodels.checkpoints import slots as slot_lib
from tfmodels.gpt import GptLanguageModel

PER_LAYER = ("qkv/kernel", "qkv/bias", "attention_output/kernel", "attention_output/bias",
             "attention_norm/gamma", "attention_norm/beta", "intermediate/kernel",
             "intermediate/bias", "output/kernel", "output/bias", "output_norm/gamma",
             "output_norm/beta")


def read_shapes(folder: str) -> List[List[int]]:
    path = os.path.join(folder, "params_shapes.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder} is not an OpenAI GPT release: {path} is missing")
    with open(path, encoding="utf-8") as f:
        shapes = json.load(f)
    if len(shapes) < 2 or (len(shapes) - 2) % len(PER_LAYER):
        raise ValueError(f"{path}: {len(shapes)} shapes is not 2 + 12 x layers")
    return shapes


def config_from_shapes(shapes: List[List[int]], num_special_tokens: int = 3,
                       num_heads: int = 12) -> configs.GptConfig:
    """The architecture the shapes list implies (heads are not recorded: GPT-1 uses 12)."""
    n_ctx, hidden = shapes[0]
    return configs.GptConfig(
        vocab_size=shapes[1][0] + num_special_tokens, hidden_size=hidden,
        num_layers=(len(shapes) - 2) // len(PER_LAYER), num_heads=num_heads,
        intermediate_size=shapes[8][-1], max_positions=n_ctx, layer_norm_epsilon=1e-5,
        gelu_approximate=True)


def load_openai_gpt(folder: str, num_special_tokens: int = 3, num_heads: int = 12,
                    seed: int = 0) -> GptLanguageModel:
    shapes = read_shapes(folder)
    cfg = config_from_shapes(shapes, num_special_tokens, num_heads)
    shard_paths = [os.path.join(folder, f"params_{n}.npy") for n in range(10)]
    absent = [p for p in shard_paths if not os.path.isfile(p)]
    if absent:
        raise ValueError(f"{folder}: missing weight shards {absent}")
    flat = np.concatenate([np.load(p) for p in shard_paths], 0)
    sizes = [int(np.prod(s)) for s in shapes]
    if flat.size != sum(sizes):
        raise ValueError(f"{folder}: the shards hold {flat.size} values, params_shapes.json "
                         f"needs {sum(sizes)}")
    params = [p.reshape(s) for p, s in zip(np.split(flat, np.cumsum(sizes))[:-1], shapes)]
    rng = np.random.default_rng(seed)
    special = rng.normal(0.0, 0.02, (num_special_tokens, cfg.hidden_size)).astype(np.float32)
    arrays = {"position_embedding": params[0],
              "token_embedding": np.concatenate([params[1], special], 0)}
    for i in range(cfg.num_layers):
        block = params[2 + i * len(PER_LAYER): 2 + (i + 1) * len(PER_LAYER)]
        for key, value in zip(PER_LAYER, block):
            arrays[f"layer_{i}/{key}"] = value[0] if value.ndim == 3 else value
    model = GptLanguageModel(cfg)
    slot_lib.assign(slot_lib.gpt_slots(model), arrays, folder)
    return model
