"""Raw Python inputs of the Python API (finetune.api) -> plain columns: strings, pairs, dicts of
columns and `tf.data.Dataset`s of any of them, checked with errors that name the item.

The task kinds (finetune.kinds) build their examples from these columns.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

Texts = Any  # list of str | list of (str, str) | {"text_a", "text_b"} | tf.data.Dataset


def text(value) -> str:
    """One text: str, bytes (UTF-8, invalid bytes replaced) or a numpy scalar of either."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a text (str), got {type(value).__name__}: {value!r}")
    return value


def rows(value) -> List[Any]:
    """One dataset element's field -> a list of rows (unbatched elements give one row)."""
    array = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    return [array.item()] if array.ndim == 0 else list(array)


def from_dataset(dataset: tf.data.Dataset) -> Tuple[Any, Optional[List[Any]]]:
    """A dataset of texts, pairs or dicts of columns (batched or not), optionally as
    (inputs, labels) -> Python columns and labels."""
    texts_a, texts_b, columns, labels = [], [], {}, []
    for element in dataset.as_numpy_iterator():
        x, y = element if isinstance(element, tuple) and len(element) == 2 and not (
            isinstance(element[0], (bytes, str, np.bytes_))
            and isinstance(element[1], (bytes, str, np.bytes_))) else (element, None)
        if isinstance(x, dict):
            # One example per element unless its first column has a batch axis.
            first = next(v for k, v in x.items() if k != "endings")
            batched = np.ndim(first) > 0
            for key, value in x.items():
                columns.setdefault(key, []).extend(list(value) if batched else [value])
        elif isinstance(x, tuple):
            texts_a += rows(x[0])
            texts_b += rows(x[1])
        else:
            texts_a += rows(x)
        if y is not None:
            labels += rows(y)
    x = columns or ({"text_a": texts_a, "text_b": texts_b} if texts_b else texts_a)
    return x, (labels or None)


def inputs_and_labels(x: Texts, y: Optional[Sequence[Any]]) -> Tuple[Any, Optional[List[Any]]]:
    """Datasets unpacked, label arrays / tensors as lists."""
    if isinstance(x, tf.data.Dataset):
        x, dataset_labels = from_dataset(x)
        y = dataset_labels if y is None else y
    if y is not None:
        y = list(rows(y) if isinstance(y, (np.ndarray, tf.Tensor)) else y)
    return x, y


def text_columns(x: Texts, pair: bool) -> Tuple[List[str], Optional[List[str]]]:
    """Single texts or (text_a, text_b) pairs -> (texts_a, texts_b or None)."""
    if isinstance(x, dict):
        a, b = list(x["text_a"]), list(x["text_b"])
    elif pair:
        items = list(x)
        bad = [i for i, item in enumerate(items) if not (isinstance(item, (tuple, list))
                                                         and len(item) == 2)]
        if bad:
            raise ValueError(f"a pair classifier takes (text_a, text_b) pairs; item {bad[0]} is "
                             f"{items[bad[0]]!r}")
        a, b = [i[0] for i in items], [i[1] for i in items]
    else:
        if isinstance(x, str):
            raise ValueError("pass a list of texts, not one string")
        a, b = list(x), None
    if pair != (b is not None):
        raise ValueError("this classifier reads text pairs; pass (text_a, text_b) tuples"
                         if pair else "this classifier reads single texts, got pairs")
    if b is not None and len(a) != len(b):
        raise ValueError(f"{len(a)} first texts but {len(b)} second texts")
    return [text(t) for t in a], (None if b is None else [text(t) for t in b])


def labelled(index: int, convert: Callable[..., Any], value: Any, *args) -> Any:
    """convert(value, *args), its ValueError naming the item (`item 3: label nan is ...`)."""
    try:
        return convert(value, *args)
    except ValueError as error:
        raise ValueError(f"item {index}: {error}") from None


def check_count(n: int, y: Optional[Sequence[Any]], what: str, labels: str) -> None:
    if y is not None and len(y) != n:
        raise ValueError(f"{n} {what} but {len(y)} {labels}")
