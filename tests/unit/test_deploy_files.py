"""Deploy files cannot be run here (no Docker engine): check them against the code instead."""

import re
from pathlib import Path

import yaml

from orchestration.cli import cli
from orchestration.settings import PulseSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_every_pulse_service_runs_an_existing_app():
    apps = cli.commands["run"].params[0].type.choices
    for name, service in COMPOSE["services"].items():
        command = service.get("command") or []
        if command[:1] == ["run"]:
            assert command[1] in apps, name


def test_every_pulse_variable_in_deploy_files_is_a_setting():
    settings = {f"PULSE_{name.upper()}" for name in PulseSettings.model_fields}
    text = (ROOT / "deploy" / "compose.yaml").read_text() + DOCKERFILE + (ROOT / "deploy" / ".env.example").read_text()
    used = set(re.findall(r"PULSE_[A-Z_]+", text))
    assert used and used <= settings, used - settings


def test_dockerfile_copies_what_exists_and_runs_as_non_root():
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, re.MULTILINE):
        assert (ROOT / source).exists(), source
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.MULTILINE)
    assert "HEALTHCHECK" in DOCKERFILE
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim", DOCKERFILE, re.MULTILINE)  # pinned


def test_dagster_services_use_the_workspace():
    for name in ("dagster-webserver", "dagster-daemon"):
        assert "/app/workspace.yaml" in COMPOSE["services"][name]["entrypoint"]
