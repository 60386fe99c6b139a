"""``pip install ./sdk/python`` into a fresh virtualenv pulls httpx (and its own dependencies) only.

Then the SDK works there, with no Pulse server package importable. Uses uv and PyPI (or uv's cache).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdk_build import SDK_DIR, SERVER_PACKAGES, uv

pytestmark = pytest.mark.integration

SMOKE = """
import importlib.util, json, httpx
from pulse_sdk import PulseClient
sent = []
def collector(request):
    sent.extend(json.loads(request.content)["events"])
    return httpx.Response(202, json={"accepted": 1, "rejected": []})
with PulseClient("http://c", "k", transport=httpx.MockTransport(collector), register_atexit=False) as pulse:
    pulse.track("click", user_id="u1", metadata={"label": "é"})
    assert pulse.flush(5)
server = [p for p in %r if importlib.util.find_spec(p) is not None]
print(json.dumps({"sent": len(sent), "server_packages": server}))
"""


def fresh_venv(path: Path, *requirements: str) -> tuple[Path, set[str]]:
    """A new virtualenv with ``requirements`` installed; its python and installed distribution names."""
    uv("venv", "--quiet", "--python", sys.executable, str(path))
    python = path / "bin" / "python"
    uv("pip", "install", "--quiet", "--python", str(python), *requirements)
    listed = json.loads(uv("pip", "list", "--format", "json", "--python", str(python)))
    return python, {item["name"].lower() for item in listed}


def test_installing_the_sdk_pulls_only_httpx(tmp_path):
    python, installed = fresh_venv(tmp_path / "sdk", str(SDK_DIR))
    _, httpx_alone = fresh_venv(tmp_path / "httpx", "httpx>=0.27")
    assert "httpx" in httpx_alone
    assert installed == httpx_alone | {"pulse-sdk"}

    done = subprocess.run(
        [str(python), "-c", SMOKE % (SERVER_PACKAGES,)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"sent": 1, "server_packages": []}
