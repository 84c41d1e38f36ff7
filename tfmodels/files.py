"""Writing files so that nothing already written is lost or half-overwritten: every output goes
to a temp path in the same folder and is renamed over its final name only once complete (a
rename within one file system is atomic), and values become strict JSON first."""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a fresh temp path beside `path` (ending in `suffix`, for writers that insist on
    one, like Keras' `.keras`); when the block succeeds the temp file replaces `path`, when it
    raises the temp file is removed and `path` is untouched. Creates the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield temp
        # mkstemp creates 0600 files; give the result the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yields a temp folder beside `path` that replaces `path` only if the block succeeds."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(dir=parent, prefix=".converting-")
    try:
        yield temp
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def atomic_write_text(path: str, text: str) -> str:
    """Writes `text` (UTF-8, newlines as given) to `path` atomically; returns `path`."""
    with atomic_path(path) as temp:
        with open(temp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return path


def json_safe(value: Any) -> Any:
    """`value` as strict JSON can hold it: tuples and arrays -> lists, numpy scalars -> Python
    numbers, bytes -> text (invalid UTF-8 replaced), NaN / inf -> None; dicts recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars
        return json_safe(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
