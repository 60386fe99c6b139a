"""The SDK is its own distribution (sdk/python): httpx is its only dependency, the server is none."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pulse_sdk
from tests.sdk_build import ROOT, SDK_DIR, SERVER_PACKAGES, build_wheel


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_wheel_requires_only_httpx(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(meta_name).decode())
    assert (metadata["Name"], metadata["Version"]) == ("pulse-sdk", pulse_sdk.__version__)
    assert metadata["Requires-Python"] == ">=3.11"
    requires = [re.match(r"[A-Za-z0-9._-]+", r).group().lower() for r in metadata.get_all("Requires-Dist")]
    assert requires == ["httpx"]
    assert {n.split("/")[0] for n in names} == {"pulse_sdk", f"pulse_sdk-{pulse_sdk.__version__}.dist-info"}


def test_sdk_imports_nothing_of_the_server(tmp_path):
    # Import every SDK module in a clean interpreter started outside the repository.
    script = (
        "import importlib, json, pkgutil, sys, pulse_sdk\n"
        "for m in pkgutil.walk_packages(pulse_sdk.__path__, 'pulse_sdk.'): importlib.import_module(m.name)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "pulse_sdk" in loaded and "httpx" in loaded
    assert loaded.isdisjoint({*SERVER_PACKAGES, "msgspec"})


def test_the_server_distribution_does_not_carry_the_sdk():
    server = _project(ROOT / "pyproject.toml")
    packages = server["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) == set(SERVER_PACKAGES)
    assert not (ROOT / "streaming" / "sdk").exists()
    assert not any(d.startswith("pulse-sdk") for d in server["project"]["dependencies"])
    # The server's tests use the SDK from this tree, as an editable path dependency.
    assert "pulse-sdk" in server["dependency-groups"]["dev"]
    assert server["tool"]["uv"]["sources"]["pulse-sdk"] == {"path": "sdk/python", "editable": True}
    sdk = _project(SDK_DIR / "pyproject.toml")["project"]
    assert (sdk["name"], sdk["version"], sdk["dependencies"]) == (
        "pulse-sdk",
        pulse_sdk.__version__,
        ["httpx>=0.27"],
    )
