"""Versioned publishing: an export written whole into `<export_base>/<model_name>/<version>/`,
the layout TF Serving's file-system source polls:

    <export_base>/<model_name>/<version>/
        saved_model.pb, variables/
        assets/          the tokenizer's vocabulary (vocab.txt; GPT-1: vocab.json, merges.txt)
        assets.extra/    tf_serving_warmup_requests (one PredictionLog per signature),
                         ops.json (op audit), export.json (task, kind, seq_length, signatures)

Versions are integers, never overwritten: each export writes `.tmp-<version>-<id>` beside them
and renames it to the next free version at the end, so a failed export leaves nothing behind
and a server never sees a half-written version.

Vocabularies are embedded in the graph as constants by both tokenizers (FastBertTokenizer's
model buffer, GptBpeTokenizer's hash-table initialisers), not read from assets/; the files in
assets/ are written from the tokenizer so clients of serving_ids tokenise with the same vocab.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Dict, Iterator, Mapping

import tensorflow as tf

from finetune.export.module import build_serving_module
from finetune.export.signatures import signature_info
from finetune.export.warmup import (OPS_FILE, WARMUP_FILE, audit_ops, example_request,
                                    predict_request, write_warmup)

EXPORT_INFO = "export.json"
# --serving_precision: the Keras policy the exported graph computes in. bfloat16 keeps the
# float32 weights and outputs (heads cast logits to float32, softmax and LayerNorm statistics
# stay float32) and runs the matmuls in bf16: faster on CPUs with AVX512-BF16 / AMX, but its
# outputs differ from the float32 export by ~1e-2 (issue 44 measures it on real sentences).
SERVING_PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@contextlib.contextmanager
def serving_precision(model, precision: str = "float32") -> Iterator[Any]:
    """`model` computing in `precision` ("float32" | "bfloat16") while the block traces it:
    every layer's dtype policy is set (the variables stay as they are) and restored after, so
    the caller's model is unchanged. A model trained under mixed_bfloat16 exports in float32
    with precision "float32" the same way."""
    if precision not in SERVING_PRECISIONS:
        raise ValueError(f"serving precision must be one of {sorted(SERVING_PRECISIONS)}, got "
                         f"{precision!r}")
    layers = [model] + [layer for layer in model._flatten_layers(include_self=False)]
    before = [layer.dtype_policy for layer in layers]
    try:
        for layer in layers:
            layer.dtype_policy = SERVING_PRECISIONS[precision]
        yield model
    finally:
        for layer, policy in zip(layers, before):
            layer.dtype_policy = policy


def export_saved_model(task_model, task_spec, tokenizer, export_base: str, model_name: str,
                       seq_length: int, ids_only: bool = False, max_query_length: int = 64,
                       max_answer_length: int = 30, warmup: bool = True,
                       pad_to_max_length: bool = False, precision: str = "float32",
                       max_new_tokens_limit: int = 0) -> str:
    """Exports `task_model` as version N+1 of `<export_base>/<model_name>/`; returns its path.

    task_model: a finetune TaskModel (task_spec = its finetune.tasks.TaskSpec) or a
      GptLanguageModel (task_spec None). tokenizer: the WordPieceTokenizer / GptBpeTokenizer
      it was fine-tuned with (optional with ids_only; then only the assets need it).
    ids_only: export only `serving_ids` (also as serving_default): core TensorFlow ops only.
    max_query_length / max_answer_length: SQuAD (as finetune.features.squad / best_span).
    warmup: write assets.extra/tf_serving_warmup_requests.
    pad_to_max_length: pack every raw-text request to seq_length (one static shape) instead of
      to its longest row.
    precision: "float32" (the default) or "bfloat16" compute (float32 outputs), see
      `serving_precision`; recorded in export.json.
    max_new_tokens_limit: the LM's `generate` refuses a request for more tokens (0: seq_length).
    """
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
    with serving_precision(task_model, precision):
        return _export(task_model, task_spec, tokenizer, export_base, model_name, seq_length,
                       ids_only, max_query_length, max_answer_length, warmup,
                       pad_to_max_length, precision, max_new_tokens_limit)


def _export(task_model, task_spec, tokenizer, export_base, model_name, seq_length, ids_only,
            max_query_length, max_answer_length, warmup, pad_to_max_length, precision,
            max_new_tokens_limit) -> str:
    module = build_serving_module(task_model, task_spec, tokenizer, seq_length, ids_only,
                                  max_query_length, max_answer_length, pad_to_max_length,
                                  max_new_tokens_limit)
    model_dir = os.path.join(export_base, model_name)
    os.makedirs(model_dir, exist_ok=True)
    temp = os.path.join(model_dir, f".tmp-{next_version(model_dir)}-{uuid.uuid4().hex[:8]}")
    try:
        with tempfile.TemporaryDirectory() as vocab_dir:
            files = write_vocab_files(tokenizer, vocab_dir) if tokenizer is not None else {}
            module.vocab_assets = [tf.saved_model.Asset(p) for p in files.values()]
            tf.saved_model.save(module, temp, signatures=module.export_signatures())
        extra = os.path.join(temp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        if warmup:
            # A short and a full-length request per signature: rows are as wide as a
            # request's longest, so the server sees both ends of the range.
            write_warmup(os.path.join(extra, WARMUP_FILE), [
                predict_request(model_name, name, example_request(
                    fn.structured_input_signature[1], seq_length, width))
                for name, fn in module.serving_signatures.items()
                for width in sorted({min(8, seq_length), seq_length})])
        custom = audit_ops(temp)
        _write_json(os.path.join(extra, OPS_FILE), {
            "custom_ops": custom,
            "needs": ("TF Serving with the tensorflow-text ops linked in (see BUILD_NOTES.md, "
                      "Serving: custom ops)") if custom else "stock TF Serving (core ops only)"})
        spec = module.head.spec
        _write_json(os.path.join(extra, EXPORT_INFO), {
            # format 2: the head's "model_type" is now "input_format" (one name per concept).
            "format": 2, "model_name": model_name, "ids_only": ids_only,
            "precision": precision,
            **dataclasses.asdict(spec),
            "tokenizer": _tokenizer_info(tokenizer, files),
            "signatures": signature_info(module.serving_signatures,
                                         module.head.signature_defaults()),
            "custom_ops": custom})
        return _publish(temp, model_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def next_version(model_dir: str) -> int:
    """1 + the largest integer version folder in model_dir (1 if none)."""
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()] if os.path.isdir(
        model_dir) else []
    return max(versions, default=0) + 1



def latest_version(path: str) -> str:
    """A version folder as given, or the highest version inside a model folder."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        raise ValueError(f"{path} does not exist")
    version = next_version(path) - 1
    if version < 1:
        raise ValueError(f"{path} holds neither saved_model.pb nor integer version folders")
    return os.path.join(path, str(version))


def read_export_info(version_dir: str) -> Dict[str, Any]:
    """assets.extra/export.json of an export made here."""
    path = os.path.join(version_dir, "assets.extra", EXPORT_INFO)
    if not os.path.isfile(path):
        raise ValueError(f"{path} is missing: not exported by finetune.export")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _publish(temp: str, model_dir: str) -> str:
    """Renames the finished export to the next free version (retrying if one appeared)."""
    for _ in range(100):
        final = os.path.join(model_dir, str(next_version(model_dir)))
        try:
            os.rename(temp, final)  # fails on an existing non-empty folder: never overwrites
            return final
        except OSError:
            if not os.path.isdir(final) or not os.listdir(final):
                raise
    raise RuntimeError(f"could not find a free version folder in {model_dir}")


def _tokenizer_info(tokenizer, files: Mapping[str, str]) -> Dict[str, Any]:
    if tokenizer is None:
        return {}
    info = {"files": {k: os.path.basename(v) for k, v in files.items()},
            "vocab_size": tokenizer.vocab_size}
    if tokenizer.family == "bert":
        info.update(type="wordpiece", lower_case=bool(tokenizer.lower_case))
    else:
        info.update(type="gpt_bpe", special_tokens=list(tokenizer.special_tokens))
    return info


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")



def write_vocab_files(tokenizer, folder: str) -> Dict[str, str]:
    """The tokenizer's vocabulary as files a client (or GptBpeTokenizer / WordPieceTokenizer)
    reads: BERT vocab.txt; GPT-1 vocab.json + merges.txt (Hugging Face names, BPE ids only,
    the three added tokens follow them). Returns role -> path."""
    os.makedirs(folder, exist_ok=True)
    if tokenizer.family == "bert":
        path = os.path.join(folder, "vocab.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in tokenizer.vocab))
        return {"vocab_file": path}
    encoder = {t: i for t, i in tokenizer.encoder.items() if i < tokenizer.bpe_vocab_size}
    merges_in_order = tokenizer.merges
    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False)
    with open(merges, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges_in_order))
    return {"encoder_file": vocab, "merges_file": merges}
