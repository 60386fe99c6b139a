"""Deploy files cannot be run here (no Docker engine, no cluster): check them against the code instead."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

from core.settings import PulseSettings
from orchestration.cli import cli
from streaming.api.app import create_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_TEXT = (DEPLOY / "compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = (DEPLOY / ".env.example").read_text()
DEPLOY_DOC = (ROOT / "docs" / "deploy.md").read_text()
CONFIGURATION_DOC = (ROOT / "docs" / "configuration.md").read_text()
DAGSTER_YAML = DEPLOY / "dagster" / "dagster.yaml"
HELM_VALUES = yaml.safe_load((DEPLOY / "dagster" / "helm-values.yaml").read_text())
K8S = DEPLOY / "k8s"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())

APPS = cli.commands["run"].params[0].type.choices
SETTINGS = {f"PULSE_{name.upper()}" for name in PulseSettings.model_fields}
IMAGE_UID = re.search(r"useradd .*--uid (\d+)", DOCKERFILE).group(1)


def _stages() -> list[str]:
    return re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE, re.MULTILINE)


def _k8s_objects() -> list[dict]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def _named(kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in _k8s_objects() if obj["kind"] == kind}


def _containers() -> list[tuple[str, dict]]:
    return [
        (name, c)
        for name, d in _named("Deployment").items()
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


# --- Dockerfile and compose --------------------------------------------------------------


def test_every_pulse_service_runs_an_existing_app():
    for name, service in COMPOSE["services"].items():
        command = service.get("command") or []
        if command[:1] == ["run"]:
            assert command[1] in APPS, name


def test_every_pulse_variable_in_deploy_files_is_a_setting():
    text = COMPOSE_TEXT + DOCKERFILE + ENV_EXAMPLE
    text += (
        "".join(p.read_text() for p in K8S.glob("*.yaml"))
        + (DEPLOY / "dagster" / "helm-values.yaml").read_text()
    )
    used = set(re.findall(r"PULSE_[A-Z_]+", text))
    assert used and used <= SETTINGS, used - SETTINGS


def test_every_compose_variable_is_in_the_env_example_or_documented():
    for variable in set(re.findall(r"(?<!\$)\$\{([A-Z_]+)", COMPOSE_TEXT)):
        assert variable in ENV_EXAMPLE or f"`{variable}`" in DEPLOY_DOC, variable


def test_dockerfile_copies_what_exists_and_runs_as_non_root():
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, re.MULTILINE):
        assert (ROOT / source).exists(), source
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.MULTILINE)
    assert "HEALTHCHECK" in DOCKERFILE
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim", DOCKERFILE, re.MULTILINE)  # pinned


def test_compose_builds_existing_targets_and_the_apps_are_the_default():
    stages = _stages()
    assert stages[-1] == "app"  # `docker build .` gives the apps' image
    for name, service in COMPOSE["services"].items():
        if "build" in service:
            assert service["build"]["target"] in stages, name
            expected = "dagster" if name.startswith("dagster") else "app"
            assert service["build"]["target"] == expected, name


def test_dagster_extras_are_pinned_to_the_locked_dagster_release():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    integration = next(d.split("==")[1] for d in dependencies if d.startswith("dagster-duckdb=="))
    pins = dict(re.findall(r'"(dagster-[a-z0-9]+)==([0-9.]+)"', DOCKERFILE))
    assert pins == {"dagster-postgres": integration, "dagster-k8s": integration}


def test_dagster_services_use_the_workspace_and_postgres_storage():
    for name in ("dagster-webserver", "dagster-daemon"):
        service = COMPOSE["services"][name]
        assert "/app/workspace.yaml" in service["command"]
        assert service["command"][0] in {"dagster-webserver", "dagster-daemon"}
        env = service["environment"]
        home = env["DAGSTER_HOME"]
        assert f"./dagster/dagster.yaml:{home}/dagster.yaml:ro" in service["volumes"]
        # Every variable dagster.yaml reads is set for the service.
        for variable in re.findall(r"env: (\w+)", DAGSTER_YAML.read_text()):
            assert variable in env, (name, variable)
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    postgres = COMPOSE["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+\S*", postgres["image"])  # pinned
    assert "postgres-data" in COMPOSE["volumes"]


def test_dagster_home_is_the_same_in_the_image_compose_and_the_helm_chart():
    image_home = re.search(r"DAGSTER_HOME=(\S+)", DOCKERFILE).group(1)
    assert image_home == "/opt/dagster/dagster_home"  # the Dagster Helm chart's global.dagsterHome
    for name in ("dagster-webserver", "dagster-daemon"):
        assert COMPOSE["services"][name]["environment"]["DAGSTER_HOME"] == image_home
    assert re.search(rf"mkdir -p .*{image_home}", DOCKERFILE) and re.search(
        rf"chown -R pulse .*{image_home}", DOCKERFILE
    )


def test_dagster_yaml_is_a_valid_postgres_instance(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for variable in re.findall(r"env: (\w+)", DAGSTER_YAML.read_text()):
        monkeypatch.setenv(variable, "x")
    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    db = config["storage"]["postgres"]["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1's default would be psycopg 3
    for key in ("local_artifact_storage", "compute_logs"):
        assert config[key]["config"]["base_dir"].startswith("/data/")  # on the shared volume


def test_redis_never_evicts_and_keeps_an_append_only_file():
    command = COMPOSE["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"


def test_archive_volume_is_shared_by_the_archiver_and_dagster():
    archive = str(PulseSettings(data_dir=Path("/data")).archive_path)
    for name in ("archiver", "dagster-webserver", "dagster-daemon"):
        assert f"archive:{archive}" in COMPOSE["services"][name]["volumes"], name
    assert "archive" in COMPOSE["volumes"]


# --- Kubernetes -------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = set(KUSTOMIZATION["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk
    assert "secret.example.yaml" not in listed  # no placeholder key is ever applied


def test_every_deployment_runs_an_app_of_the_image_as_its_user():
    image_names = {image["name"] for image in KUSTOMIZATION["images"]}
    deployments = _named("Deployment")
    assert {c["args"][1] for _, c in _containers()} == set(APPS)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        assert (
            str(pod["securityContext"]["runAsUser"]) == IMAGE_UID and pod["securityContext"]["runAsNonRoot"]
        )
        for container in pod["containers"]:
            assert container["image"] in image_names, name
            assert container["args"][0] == "run" and container["args"][1] in APPS
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
            assert "memory" in container["resources"]["limits"], name


def test_config_and_secret_hold_documented_settings_the_pods_read():
    config = next(iter(_named("ConfigMap").values()))
    secret = next(iter(_named("Secret").values()))
    for key in [*config["data"], *secret["stringData"]]:
        assert key in SETTINGS, key
        assert f"`{key}`" in CONFIGURATION_DOC, key
    assert not config["data"].keys() & secret["stringData"].keys()
    for name, container in _containers():
        sources = [next(iter(source.items())) for source in container["envFrom"]]
        refs = {(kind, ref["name"]) for kind, ref in sources}
        assert refs == {
            ("configMapRef", config["metadata"]["name"]),
            ("secretRef", secret["metadata"]["name"]),
        }, name
    # What the apps need to start outside local dev is configured.
    assert {"PULSE_KAFKA_BROKERS", "PULSE_REDIS_URL", "PULSE_WRITE_KEYS", "PULSE_READ_KEYS"} <= config[
        "data"
    ].keys() | secret["stringData"].keys()


def test_api_probes_and_service_use_its_port():
    config = next(iter(_named("ConfigMap").values()))["data"]
    api = _named("Deployment")["pulse-api"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": int(config["PULSE_API_PORT"])}
    assert config["PULSE_API_HOST"] == "0.0.0.0"
    assert api["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    for probe in ("startupProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["port"] == "http"
    service = _named("Service")["pulse-api"]
    assert (
        service["spec"]["selector"].items()
        <= _named("Deployment")["pulse-api"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports.keys()


def test_api_probe_paths_exist_in_the_app():
    app = create_app(PulseSettings(dev_mode=True))
    paths = {route.path for route in app.routes if "GET" in (getattr(route, "methods", None) or ())}
    assert "/healthz" in paths
    api = _named("Deployment")["pulse-api"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["path"] in paths, probe


def _probe_app(command: list[str]) -> str:
    """The app a `pulse probe APP ...` command checks, after checking its options exist."""
    assert command[:2] == ["pulse", "probe"], command
    probe = cli.commands["probe"]
    assert command[2] in probe.params[0].type.choices
    options = {opt for param in probe.params[1:] for opt in param.opts}
    assert {arg for arg in command[3:] if arg.startswith("--")} <= options, command
    return command[2]


def test_consumer_apps_are_probed_with_pulse_probe_for_their_own_app():
    for name, container in _containers():
        app = container["args"][1]
        if app not in ("profile-app", "archiver", "relay"):
            continue
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert _probe_app(container[kind]["exec"]["command"]) == app, (name, kind)
        assert "--ready" in container["readinessProbe"]["exec"]["command"]
    for name in ("profile-app", "archiver", "relay"):
        test = COMPOSE["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD" and _probe_app(test[1:]) == name


def test_profile_app_replicas_fit_the_partitions():
    partitions = int(next(iter(_named("ConfigMap").values()))["data"]["PULSE_TOPIC_PARTITIONS"])
    replicas = _named("Deployment")["pulse-profile-app"]["spec"]["replicas"]
    assert 1 <= replicas <= partitions and partitions % replicas == 0


def test_volumes_refer_to_existing_claims():
    claims = _named("PersistentVolumeClaim")
    for name, deployment in _named("Deployment").items():
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    archiver = _named("Deployment")["pulse-archiver"]["spec"]["template"]["spec"]["containers"][0]
    archive = str(PulseSettings(data_dir=Path("/data")).archive_path)
    assert any(m["mountPath"] == archive and m.get("subPath") == "archive" for m in archiver["volumeMounts"])
    assert all("ReadWriteMany" in c["spec"]["accessModes"] for c in claims.values())


def test_dagster_helm_values_use_our_image_config_and_volume():
    deployment = HELM_VALUES["dagster-user-deployments"]["deployments"][0]
    assert deployment["image"]["tag"] == KUSTOMIZATION["images"][0]["newTag"]
    args = deployment["codeServerArgs"]
    module = args[args.index("--module-name") + 1]
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert args[args.index("--working-directory") + 1] == re.search(
        r"^WORKDIR (\S+)", DOCKERFILE, re.MULTILINE
    ).group(1)
    assert {c["name"] for c in deployment["envConfigMaps"]} <= _named("ConfigMap").keys()
    assert {s["name"] for s in deployment["envSecrets"]} <= _named("Secret").keys()
    assert {v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]} <= _named(
        "PersistentVolumeClaim"
    ).keys()
    assert str(deployment["podSecurityContext"]["runAsUser"]) == IMAGE_UID
    assert HELM_VALUES["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert HELM_VALUES["runLauncher"]["type"] == "K8sRunLauncher"


def test_kustomize_renders_the_manifests():
    # Not skipped without kubectl: the machines CI runs on carry it, and a skip would pass unseen.
    assert shutil.which("kubectl"), "this test renders deploy/k8s with `kubectl kustomize`: install kubectl"
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    )
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {doc["kind"] for doc in rendered} >= {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
    }
    for doc in rendered:
        if doc["kind"] == "Deployment":
            image = doc["spec"]["template"]["spec"]["containers"][0]["image"]
            assert image == f"pulse:{KUSTOMIZATION['images'][0]['newTag']}"
