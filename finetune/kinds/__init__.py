"""The task kinds: one object per kind owns encoding, head, loss, decoding, metrics, prediction
files, serving head and the Python API's inputs and outputs (finetune.kinds.base.TaskKind).

    from finetune import kinds
    kind = kinds.get_kind("span")            # or a TaskSpec's `kind`
    features = kind.encode(examples, "bert", tokenizer, 384, doc_stride=128, max_query_length=64)
    model = kind.build_model(task, backbone)

Adding a kind: a module with a TaskKind subclass, registered here (or by `register` from any
module, e.g. a plug-in or a test).
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

from finetune.kinds.base import Decoded, DecodeOptions, TaskKind
from finetune.kinds.choice import MULTIPLE_CHOICE
from finetune.kinds.classification import CLASSIFICATION
from finetune.kinds.lm import LANGUAGE_MODEL
from finetune.kinds.regression import REGRESSION
from finetune.kinds.span import SPAN
from finetune.kinds.tagging import TAGGING

_REGISTRY: Dict[str, TaskKind] = {}


def register(kind: TaskKind) -> TaskKind:
    """Makes `kind` known by its name (TaskSpec(kind="name"), exports, results.json)."""
    if not kind.name:
        raise ValueError(f"{type(kind).__name__} has no name")
    known = _REGISTRY.get(kind.name)
    if known is not None and type(known) is not type(kind):
        raise ValueError(f"task kind {kind.name!r} is already {type(known).__name__}")
    _REGISTRY[kind.name] = kind
    return kind


for _kind in (CLASSIFICATION, REGRESSION, SPAN, MULTIPLE_CHOICE, TAGGING, LANGUAGE_MODEL):
    register(_kind)


def names() -> Tuple[str, ...]:
    return tuple(_REGISTRY)


def get_kind(kind: Union[str, TaskKind]) -> TaskKind:
    """The registered kind of that name (a TaskKind passes through); ValueError otherwise."""
    if isinstance(kind, TaskKind):
        return kind
    try:
        return _REGISTRY[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task kind {kind!r}; known kinds: "
                         f"{', '.join(_REGISTRY)}") from None


__all__ = ["CLASSIFICATION", "REGRESSION", "SPAN", "MULTIPLE_CHOICE", "TAGGING",
           "LANGUAGE_MODEL", "Decoded", "DecodeOptions", "TaskKind", "get_kind", "names",
           "register"]
