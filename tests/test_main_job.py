"""The README's main job: its shipped SST-2 sample, its interval, its quiet log, and (slow) the
whole job end to end on the real MiniLM with a shortened budget."""
import os
import pathlib
import subprocess
import sys

import pytest

from tools import main_job

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_shipped_sst2_sample_holds_back_unseen_rows():
    train, heldout = main_job.sst2_rows()
    assert (len(train), len(heldout)) == (3000, 1048)
    assert {y for _, y in train + heldout} == {"0", "1"}
    assert all(len(t.split()) >= 8 for t, _ in train + heldout)
    seen = [t for t, _ in train]
    # No held-back row is a phrase of, or contains, a training row (SST-2 phrases nest).
    assert not any(h in s or s in h for h, _ in heldout for s in seen)
    readme = (ROOT / "tools" / "demo_data" / "README.md").read_text()
    assert "Socher" in readme and "lines 3002-4049" in readme


def test_wilson_interval():
    low, high = main_job.wilson_interval(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    low, high = main_job.wilson_interval(100, 100)  # stays inside [0, 1], unlike the normal one
    assert high == pytest.approx(1.0) and 0.96 < low < 0.97


def test_native_log_lines_are_filtered_and_the_rest_passes():
    script = ("import os\n"
              "from tfmodels.quiet_logs import quiet_native_logs\n"
              "quiet_native_logs()\n"
              "os.write(2, b'I0000 00:00:1796140384.615180   24639 port.cc:153] oneDNN on\\n')\n"
              "os.write(2, b'WARNING: All log messages before absl::InitializeLog() '\n"
              "         b'is called\\n')\n"
              "os.write(2, b'F0000 00:00:1796140384.615180   24639 x.cc:1] Check failed\\n')\n"
              "os.write(2, b'a real error\\n')\n"
              "import sys; sys.stderr.write('progress 3/4\\n')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env={k: v for k, v in os.environ.items()
                                           if k != "_QUIET_LOGS_FILTERING"})
    assert result.returncode == 0
    assert sorted(result.stderr.splitlines()) == sorted([
        "F0000 00:00:1796140384.615180   24639 x.cc:1] Check failed", "a real error",
        "progress 3/4"])


def test_progress_line_has_rate_and_eta():
    import io
    from tfmodels.progress import Progress
    stream = io.StringIO()
    progress = Progress(10, "fit", stream=stream, log_lines=2)
    for done in range(1, 11):
        progress.update(done, loss=0.5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "5/10 steps" in lines[0] and "ETA" in lines[0]
    assert "10/10 steps" in lines[1] and "steps/s" in lines[1] and "loss 0.5" in lines[1]


@pytest.mark.slow
def test_main_job_runs_end_to_end(minilm_dir, tmp_path):
    """The job as a user runs it (its own process, quiet log), on a shortened budget."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.main_job", f"--output_dir={tmp_path}", "--bert_steps=20",
         "--gpt_steps=60", "--train_examples=1280", "--min_accuracy=0.6"],
        capture_output=True, text=True, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "_QUIET_LOGS_FILTERING"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for stage in ("1 BERT pretraining", "2 GPT pretraining", "3 fine-tune", "4 held-back eval",
                  "5 serve"):
        assert stage in out
    assert "95% Wilson interval" in out and "labels identical" in out
    assert "I0000" not in result.stderr and "signature_serialization" not in result.stderr
    assert (tmp_path / "export" / "sst2" / "1" / "saved_model.pb").is_file()
    assert len((tmp_path / "new_sentence_predictions.jsonl").read_text().splitlines()) == 6
