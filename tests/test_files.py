"""tfmodels.files: atomic writes (a failed write leaves the old file and no temp file) and the
strict-JSON sanitiser every results / predictions writer uses."""
import json
import math
import os

import numpy as np
import pytest

from tfmodels.files import atomic_directory, atomic_path, atomic_write_text, json_safe


def test_atomic_write_replaces_whole_files_or_nothing(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    assert atomic_write_text(str(path), "first\r\nline\n") == str(path)
    assert path.read_bytes() == b"first\r\nline\n"            # newlines kept as given
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(str(path)) as temp:
            with open(temp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"first\r\nline\n"                   # untouched
    assert sorted(os.listdir(path.parent)) == ["out.txt"]     # no temp file left behind
    with atomic_path(str(tmp_path / "model.keras"), suffix=".keras") as temp:
        assert temp.endswith(".keras") and os.path.dirname(temp) == str(tmp_path)


def test_atomic_directory(tmp_path):
    target = tmp_path / "converted"
    with pytest.raises(ValueError):
        with atomic_directory(str(target)) as temp:
            open(os.path.join(temp, "a.txt"), "w").close()
            raise ValueError("bad checkpoint")
    assert os.listdir(tmp_path) == []
    with atomic_directory(str(target)) as temp:
        open(os.path.join(temp, "a.txt"), "w").close()
    assert os.listdir(target) == ["a.txt"]


def test_json_safe_gives_strict_json():
    value = {"t": (1, 2), "nan": float("nan"), "inf": -math.inf, "np": np.float32(0.5),
             "arr": np.array([[1, 2]], np.int64), "words": np.array([b"caf\xc3\xa9", b"\xff"]),
             "nested": [{"x": np.int32(3)}]}
    safe = json_safe(value)
    assert safe == {"t": [1, 2], "nan": None, "inf": None, "np": 0.5, "arr": [[1, 2]],
                    "words": ["café", "\ufffd"], "nested": [{"x": 3}]}
    json.dumps(safe, allow_nan=False)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
