"""One writer per output folder (tfmodels.folder_lock): a second writer is refused in one line
naming the first, a lock left by a dead process is taken over, only a cluster's chief writes."""
import json
import os
import subprocess
import sys
import types

import pytest

from finetune.config import FinetuneConfig
from finetune.trainer import run_finetune
from tests.support import PROJECT_ROOT, finetune_config
from tfmodels.folder_lock import LOCK_FILE, FolderLocked, exclusive_folder, is_chief

HOLD = """
import sys
from tfmodels.folder_lock import exclusive_folder
with exclusive_folder(sys.argv[1], "fine-tuning"):
    print("locked", flush=True)
    sys.stdin.read()   # until the test closes stdin
"""


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with exclusive_folder(str(tmp_path / "run"), "fine-tuning"):
        record = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["what"] == "fine-tuning"
        with pytest.raises(FolderLocked, match=f"run is being written by pid {os.getpid()} on "):
            with exclusive_folder(str(tmp_path / "run")):
                pass
    # Released: the record is cleared and the folder can be taken again.
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""
    with exclusive_folder(str(tmp_path / "run")):
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 4242, "host": "h", "started": "t"}))
    messages = []
    with exclusive_folder(str(tmp_path), log=messages.append):
        pass
    assert messages == [f"{tmp_path}: taking over the lock of pid 4242 on h, started t (?), "
                        "which is no longer running"]


def test_two_fine_tunings_on_one_output_dir(tmp_path):
    """The second process is refused before it reads or writes anything."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = finetune_config(task="sst2", data_dir=str(tmp_path / "absent"),
                                output_dir=str(out))
        with pytest.raises(FolderLocked, match=f"out is being written by pid {holder.pid} on "
                                               ".*one writer per folder"):
            run_finetune(config, log=lambda message: None)
        assert sorted(os.listdir(out)) == [LOCK_FILE]
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0


def _strategy(task_type=None, task_id=0, cluster=None):
    resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                     cluster_spec=lambda: types.SimpleNamespace(
                                         as_dict=lambda: cluster or {}))
    return types.SimpleNamespace(cluster_resolver=resolver if task_type else None)


def test_only_the_chief_writes():
    assert is_chief(types.SimpleNamespace())            # one process: it writes
    assert is_chief(_strategy())
    two_workers = {"worker": ["localhost:1", "localhost:2"]}
    assert is_chief(_strategy("worker", 0, two_workers))
    assert not is_chief(_strategy("worker", 1, two_workers))
    with_chief = {"chief": ["localhost:0"], "worker": ["localhost:1"]}
    assert is_chief(_strategy("chief", 0, with_chief))
    assert not is_chief(_strategy("worker", 0, with_chief))
