"""A readable log: TensorFlow's C++ start-up lines and absl INFO records kept out of the way.

TensorFlow 2.21 writes lines such as `I0000 ... cudart_stub.cc:31] Could not find cuda drivers`
from C++ before any Python runs, whatever TF_CPP_MIN_LOG_LEVEL says, and its Python side logs
every SavedModel write at absl INFO. `quiet_native_logs()` (call it BEFORE importing
TensorFlow) routes file descriptor 2 through a filter that drops lines in absl's C++ log format
and passes everything else (Python's own stderr keeps the real terminal, so progress lines are
not delayed); child processes inherit the filter. `quiet_python_logs()` sets absl to WARNING.
Binaries call `quiet_start_up(argv)` (both, and TF_CPP_MIN_LOG_LEVEL=2 unless set) through
`tfmodels.cli.run_binary` and, for console scripts, before TensorFlow is imported
(`tfmodels.launcher`); they skip it when `--verbosity` / `-v` is on the command line.

The Python API (`import finetune`) cannot own the process's stderr: it calls
`import_tensorflow_quietly()`, which filters fd 2 only while TensorFlow loads and finds its
devices (where the start-up lines and the failed cuInit come from) and then puts fd 2 back.
TF_CPP_MIN_LOG_LEVEL=0 in the environment keeps TensorFlow's lines.
"""
from __future__ import annotations

import atexit
import io
import os
import re
import sys
import threading
from typing import Callable, Sequence

# absl / glog C++ records ("I0000 00:00:1796140384.615180   24639 port.cc:153] ...") and the
# banner absl prints before its logging is initialised. Fatal (F) records always pass.
NATIVE_LOG_LINE = re.compile(rb"^([IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]|"
                             rb"WARNING: All log messages before absl::InitializeLog|"
                             # the second line of cpu_feature_guard's record
                             rb"To enable the following instructions: .* rebuild TensorFlow)")


def verbosity_requested(argv: Sequence[str]) -> bool:
    return any(a == "-v" or a.startswith(("--verbosity", "-v=")) for a in argv[1:])


def _forward(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        pending = b""
        while True:
            chunk = source.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NATIVE_LOG_LINE.match(line))
            if kept:
                os.write(write_fd, kept)
        if pending and not NATIVE_LOG_LINE.match(pending):
            os.write(write_fd, pending)
    os.close(write_fd)


def _filter_fd2() -> Callable[[], None]:
    """fd 2 -> a filter thread -> the real stderr; returns the function that puts fd 2 back
    (and waits for the thread to pass on what it holds)."""
    real = os.dup(2)
    read_fd, write_fd = os.pipe()
    sys.stderr.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, os.dup(real)), daemon=True)
    thread.start()

    def restore():
        os.dup2(real, 2)  # closes the pipe's last writer in this process: the thread drains
        os.close(real)
        thread.join(timeout=2)

    return restore


def quiet_native_logs() -> None:
    """fd 2 -> a filter thread -> the real stderr, for the rest of the process;
    sys.stderr writes to the real stderr."""
    if os.environ.get("_QUIET_LOGS_FILTERING"):
        return  # a child of a filtered process: its fd 2 already goes through the filter
    os.environ["_QUIET_LOGS_FILTERING"] = "1"
    sys.stderr.flush()
    real_copy = os.dup(2)
    restore = _filter_fd2()
    sys.stderr = io.TextIOWrapper(os.fdopen(real_copy, "wb", buffering=0),
                                  encoding="utf-8", errors="backslashreplace",
                                  write_through=True)
    atexit.register(restore)


def quiet_python_logs() -> None:
    from absl import logging
    logging.set_verbosity(logging.WARNING)


def quiet_start_up(argv: Sequence[str]) -> None:
    """A binary's quiet start-up (module docstring); nothing when `--verbosity` is asked for."""
    if verbosity_requested(argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_native_logs()
    quiet_python_logs()


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow (and lets it find its devices) with its C++ start-up lines filtered,
    then gives fd 2 back: for the Python API, which must leave the process's stderr alone."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" \
            or os.environ.get("_QUIET_LOGS_FILTERING"):
        return
    restore = _filter_fd2()
    try:
        import tensorflow as tf
        tf.config.list_physical_devices("GPU")  # CUDA's probe (and its cuInit error) happens here
    finally:
        restore()
