"""Checks on saved model files before Keras or TensorFlow load them, so that a damaged file
gets an error saying what is wrong with it (Keras calls a truncated .keras file "not found";
a SavedModel without its variables/ folder fails in three chained TensorFlow tracebacks)."""
from __future__ import annotations

import os
import zipfile


def check_keras_file(path: str) -> None:
    """ValueError unless `path` is a complete `.keras` (zip) archive."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"model file {path} is a folder, expected a .keras file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a readable .keras file: truncated or corrupt (not a "
                         f"complete zip archive, {os.path.getsize(path)} bytes)")


def check_saved_model(version_dir: str) -> None:
    """ValueError unless `version_dir` holds saved_model.pb and its variables."""
    if not os.path.isfile(os.path.join(version_dir, "saved_model.pb")):
        raise ValueError(f"{version_dir} is not a SavedModel: no saved_model.pb")
    index = os.path.join(version_dir, "variables", "variables.index")
    if not os.path.isfile(index):
        raise ValueError(f"SavedModel {version_dir} has no variables ({index} is missing): "
                         f"copy the whole export folder, variables/ included")
