"""One writer per output folder.

A run that writes a folder (fine-tuning's --output_dir, an export's model folder, pretraining's
--model_dir, data creation's --output_dir) holds an exclusive lock on `<folder>/.lock` while it
writes. A second process refuses at once, in one line naming the holder (pid, host, start time,
command), instead of interleaving its files with the first one's:

    with exclusive_folder(config.output_dir, "fine-tuning"):
        ...   # write results, predictions, the model

The lock is `fcntl.flock`, so the kernel releases it when its holder exits or dies: a lock file
left by a killed run is taken over (with a message), never stale. It works on local disks; NFS
may not honour flock. In a multi-worker run only the chief writes, so only the chief locks.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Callable, Iterator, Optional

LOCK_FILE = ".lock"


class FolderLocked(ValueError):
    """Another process holds the folder (a ValueError: binaries report it in one line)."""


def _holder_text(record: dict) -> str:
    if not record:
        return "another process"
    return (f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}"
            f" ({record.get('command', '?')})")


@contextlib.contextmanager
def exclusive_folder(folder: str, what: str = "a run",
                     log: Optional[Callable[[str], None]] = None) -> Iterator[str]:
    """Holds `<folder>/.lock` (creating the folder) for the body; FolderLocked if another
    process holds it. `what` names the writer in the holder record and in messages."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            raise FolderLocked(f"{folder} is being written by {_holder_text(holder)}: one "
                               f"writer per folder; wait for it to finish or use another "
                               f"folder") from None
        handle.seek(0)
        left = handle.read().strip()
        if left and log is not None:
            # The kernel released the lock of a process that ended without clearing the record.
            try:
                log(f"{folder}: taking over the lock of {_holder_text(json.loads(left))}, "
                    f"which is no longer running")
            except json.JSONDecodeError:
                log(f"{folder}: taking over a lock left by a process no longer running")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])[:200],
        }) + "\n")
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def is_chief(strategy) -> bool:
    """Whether this process writes a distributed run's files (the chief, or worker 0 of a
    cluster without one; any process outside a multi-worker run)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
