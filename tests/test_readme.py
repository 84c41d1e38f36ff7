"""README.md cannot drift: its code blocks run in order, as written, in one fresh folder.

Every fenced ```bash / ```python block runs, one after the other, in a folder laid out as a
checkout (`tools/` for the shipped demo data, `../shared` beside it), so a block may use what
an earlier one wrote. The console scripts are the checkout's (`python -m tfmodels.launcher`
shims first on PATH), so the README is checked against this code, installed or not.

Comments just before a block steer the test:
  <!-- readme-test: skip (why) -->          the block is not run (the set-up commands, which
                                             CI runs itself; the papers' full-scale runs)
  <!-- readme-test: expect REGEX >= X -->   the block's output must match REGEX and its first
                                             group, a number, be at least X
"""
import os
import re
import shutil
import subprocess
import sys
import time
from typing import List, NamedTuple, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.S | re.M)
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->\s*$", re.S)
RUN_LANGUAGES = ("bash", "python")


class Block(NamedTuple):
    language: str
    code: str
    line: int
    skip: Optional[str]          # the reason, when skipped
    expect: Optional[tuple]      # (regex, minimum)


def readme_blocks(text: str) -> List[Block]:
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        skip = expect = None
        if marker:
            directive = marker.group(1)
            if directive.startswith("skip"):
                skip = directive[len("skip"):].strip(" ()") or None
                if not skip:
                    raise AssertionError(f"README line {text.count(chr(10), 0, match.start())}: "
                                         "a skipped block must say why")
            elif directive.startswith("expect"):
                regex, minimum = directive[len("expect"):].strip().rsplit(">=", 1)
                expect = (regex.strip(), float(minimum))
        blocks.append(Block(match.group(1), match.group(2),
                            text.count("\n", 0, match.start()) + 2, skip, expect))
    return blocks


def test_markers_are_read():
    text = ("intro\n<!-- readme-test: skip (runs CI itself) -->\n```bash\nbash x.sh\n```\n"
            "<!-- readme-test: expect acc (\\d\\.\\d+) >= 0.8 -->\n```python\nprint(1)\n```\n"
            "```text\nnot code\n```\n")
    skipped, expected, other = readme_blocks(text)
    assert skipped.skip == "runs CI itself" and skipped.line == 4
    assert expected.expect == ("acc (\\d\\.\\d+)", 0.8) and expected.code == "print(1)\n"
    assert other.language == "text"


def _workspace(tmp_path, shared_data):
    """tmp/repo (tools -> the checkout's, shim bin) beside tmp/shared -> ../shared."""
    repo = tmp_path / "repo"
    repo.mkdir()
    os.symlink(os.path.join(ROOT, "tools"), repo / "tools")
    os.symlink(shared_data.parent, tmp_path / "shared")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    from tfmodels.launcher import CONSOLE_SCRIPTS
    for script in CONSOLE_SCRIPTS:
        shim = bin_dir / script
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tfmodels.launcher {script} "$@"\n')
        shim.chmod(0o755)
    os.symlink(sys.executable, bin_dir / "python")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=ROOT,
               KERAS_BACKEND="tensorflow", PYTHONUNBUFFERED="1")
    env.pop("_QUIET_LOGS_FILTERING", None)
    return repo, env


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tmp_path, shared_data):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = [b for b in readme_blocks(f.read()) if b.language in RUN_LANGUAGES]
    assert blocks
    repo, env = _workspace(tmp_path, shared_data)
    ran = 0
    for block in blocks:
        if block.skip:
            print(f"README line {block.line}: skipped ({block.skip})")
            continue
        command = (["bash", "-euo", "pipefail", "-c", block.code] if block.language == "bash"
                   else [sys.executable, "-c", block.code])
        started = time.perf_counter()
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True,
                                timeout=1200)
        print(f"README line {block.line} ({block.language}): exit {result.returncode} in "
              f"{time.perf_counter() - started:.0f} s\n{result.stdout[-3000:]}")
        assert result.returncode == 0, (
            f"README line {block.line}: the {block.language} block failed:\n"
            f"{result.stderr[-4000:]}")
        if block.expect:
            regex, minimum = block.expect
            found = re.search(regex, result.stdout)
            assert found, f"README line {block.line}: output lacks {regex!r}:\n{result.stdout}"
            assert float(found.group(1)) >= minimum, (
                f"README line {block.line}: {found.group(0)!r}, expected >= {minimum}")
        ran += 1
    assert ran >= 4, "the README's runnable blocks were skipped"
    shutil.rmtree(repo / "runs", ignore_errors=True)
