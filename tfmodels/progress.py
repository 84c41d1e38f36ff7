"""Progress of long stages on stderr, with a rate and an ETA, so stdout keeps only results.

On a terminal the line is redrawn in place; in a log file (stderr not a tty) it is written at
most `log_lines` times, so a captured run stays short.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

import keras


def _seconds(value: float) -> str:
    value = int(round(value))
    return f"{value // 60}m{value % 60:02d}s" if value >= 60 else f"{value}s"


class Progress:
    """`update(done, **values)` draws `label [####....] done/total unit  rate  ETA  values`."""

    def __init__(self, total: int, label: str = "", unit: str = "steps", width: int = 24,
                 stream: Optional[TextIO] = None, log_lines: int = 4):
        self.total, self.label, self.unit, self.width = max(int(total), 1), label, unit, width
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = max(1, self.total // max(log_lines, 1))
        self.start = time.perf_counter()
        self.last = 0

    def line(self, done: int, **values: float) -> str:
        elapsed = time.perf_counter() - self.start
        rate = done / max(elapsed, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = int(self.width * min(done, self.total) / self.total)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        timing = (f"ETA {_seconds(eta)}" if done < self.total else f"in {_seconds(elapsed)}")
        return (f"{self.label + ' ' if self.label else ''}[{'#' * filled}"
                f"{'.' * (self.width - filled)}] {done}/{self.total} {self.unit}  "
                f"{rate:.1f} {self.unit}/s  {timing}{'  ' + shown if shown else ''}")

    def update(self, done: int, **values: float) -> None:
        finished = done >= self.total
        if self.interactive:
            self.stream.write("\r" + self.line(done, **values) + ("\n" if finished else ""))
        elif finished or done - self.last >= self.log_every:
            self.stream.write(self.line(done, **values) + "\n")
            self.last = done
        self.stream.flush()


class ProgressCallback(keras.callbacks.Callback):
    """Keras `fit` progress over all epochs on stderr (use with verbose=0)."""

    def __init__(self, total_steps: int, label: str = "fit", **options):
        super().__init__()
        self.progress = Progress(total_steps, label, **options)
        self.done = 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        logs = logs or {}
        self.progress.update(self.done, **{k: float(v) for k, v in logs.items()
                                           if k in ("loss", "accuracy")})
