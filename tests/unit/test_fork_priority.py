"""ForkPriority: each child of a process, as /proc lists it, is lowered once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.fork_priority import ForkPriority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="setpriority on a pid: Linux")


def children_file(proc: Path, parent: int) -> Path:
    path = proc / str(parent) / "task" / str(parent) / "children"
    path.parent.mkdir(parents=True)
    return path


def test_each_listed_child_is_lowered_once(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        listed = children_file(tmp_path, 4242)
        listed.write_text(f"{child.pid} ")
        forks = ForkPriority(4242, niceness=15, proc=tmp_path)
        assert forks.lower() == [child.pid]
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 15
        assert forks.lower() == []  # already lowered
    finally:
        child.kill()
        child.wait()


def test_a_gone_parent_or_child_changes_nothing(tmp_path: Path) -> None:
    assert ForkPriority(4242, proc=tmp_path).lower() == []  # no such process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    children_file(tmp_path, 4242).write_text(f"{child.pid}\n")
    assert ForkPriority(4242, proc=tmp_path).lower() == []  # the child exited before it was seen
