"""Build and install the Python SDK (sdk/python) as its own distribution, with the project's uv."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SDK_DIR = ROOT / "sdk" / "python"
#: Top-level packages of the server distribution; the SDK may import none of them.
SERVER_PACKAGES = ("core", "quality", "enrichment", "streaming", "assets", "orchestration")


def uv_binary() -> str:
    """The uv that scripts/bootstrap uses: .tools/bin/uv, else the one on PATH."""
    local = ROOT / ".tools" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if found is None:  # not a skip: ./scripts/test installs it, so CI always runs these tests
        pytest.fail("uv is not installed: run scripts/bootstrap (it installs it into .tools/)")
    return found


def uv(*args: str, timeout: float = 300) -> str:
    """Run uv; return its stdout, or fail the test with its stderr."""
    done = subprocess.run([uv_binary(), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"uv {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def build_wheel(out_dir: Path) -> Path:
    """Build the SDK's wheel into ``out_dir`` and return its path."""
    uv("build", "--wheel", "--out-dir", str(out_dir), str(SDK_DIR))
    (wheel,) = out_dir.glob("pulse_sdk-*.whl")
    return wheel
