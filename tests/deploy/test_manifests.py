"""Offline checks of deploy/: Dockerfiles, compose, KubeRay manifests, Prometheus and Grafana.

Nothing is built or started. The files are parsed and checked for agreement with each other and
with the code:

- image tags match the Dockerfiles' documented build commands and pyproject's version;
- ports agree across files (API 8000, Ray GCS 6379, dashboard 8265, Ray metrics 8080);
- every SPARSETRAIN_* variable is a field of ``Settings``;
- every metric on the dashboard is one that workers/runtime/telemetry.py or service/observability.py
  exports, under the name Prometheus sees.

Each check is a function of a repository root that raises ``AssertionError``.
``test_check_fails_on_a_broken_copy`` runs the checks on copies of the files, each broken on
purpose, to make sure every check can fail.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparsetrain.service.settings import Settings

REPO = Path(__file__).resolve().parents[2]

DOCKERFILE = "deploy/docker/Dockerfile"
DOCKERFILE_CUDA = "deploy/docker/Dockerfile.cuda"
ENTRYPOINT = "deploy/docker/entrypoint.sh"
COMPOSE = "deploy/compose.yaml"
RAYCLUSTER = "deploy/kuberay/raycluster.yaml"
SERVICE = "deploy/kuberay/service.yaml"
MONITORING = "deploy/kuberay/monitoring.yaml"
PROMETHEUS = "deploy/monitoring/prometheus.yml"
GRAFANA_DATASOURCES = "deploy/monitoring/grafana/provisioning/datasources/prometheus.yaml"
GRAFANA_PROVIDERS = "deploy/monitoring/grafana/provisioning/dashboards/sparsetrain.yaml"
DASHBOARD = "deploy/monitoring/grafana/dashboards/sparsetrain.json"
DOCS = "docs/deploy.md"
README = "deploy/README.md"
TELEMETRY = "workers/runtime/telemetry.py"
OBSERVABILITY = "service/observability.py"

API_PORT = 8000
GCS_PORT = 6379
DASHBOARD_PORT = 8265
RAY_METRICS_PORT = 8080
DATA_DIR = "/data"
RAY_SD_FILE = "/tmp/ray/prom_metrics_service_discovery.json"
SERVE_COMMAND = ["sparsetrain", "serve", "--host", "0.0.0.0", "--port", str(API_PORT)]

# Environment variables the files may set besides SPARSETRAIN_* settings: Ray's own, the
# image entrypoint's (JOIN_RAY_*), Python/pip build settings, and Grafana's GF_* (by prefix).
OTHER_ENV = {
    "RAY_ADDRESS",
    "RAY_GRAFANA_HOST",
    "RAY_GRAFANA_IFRAME_HOST",
    "RAY_PROMETHEUS_HOST",
    "RAY_USAGE_STATS_ENABLED",
    "JOIN_RAY_ARGS",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PATH",
}


# ---- readers --------------------------------------------------------------------------------


def read(root: Path, rel: str) -> str:
    path = root / rel
    assert path.is_file(), f"{rel} is missing"
    return path.read_text()


def yaml_docs(root: Path, rel: str) -> list[dict[str, Any]]:
    """Every document of a (multi-document) YAML file; each must be a mapping."""
    try:
        docs = [doc for doc in yaml.safe_load_all(read(root, rel)) if doc is not None]
    except yaml.YAMLError as error:
        raise AssertionError(f"{rel} does not parse: {error}") from None
    assert docs, f"{rel} has no documents"
    for index, doc in enumerate(docs):
        assert isinstance(doc, dict), f"{rel} document {index} is not a mapping"
    return docs


def yaml_doc(root: Path, rel: str) -> dict[str, Any]:
    docs = yaml_docs(root, rel)
    assert len(docs) == 1, f"{rel} should hold one document, has {len(docs)}"
    return docs[0]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one_of_kind(docs: list[dict[str, Any]], kind: str, rel: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"{rel}: expected one {kind}, found {len(found)}"
    return found[0]


def project_version(root: Path) -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', read(root, "pyproject.toml"), re.MULTILINE)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def pinned(root: Path, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", read(root, "constraints.txt"), re.M | re.I)
    assert match, f"constraints.txt pins no {package}"
    return match.group(1)


def images(root: Path) -> dict[str, str]:
    """The image each Dockerfile builds: sparsetrain:<version> and sparsetrain:<version>-cuda."""
    version = project_version(root)
    return {DOCKERFILE: f"sparsetrain:{version}", DOCKERFILE_CUDA: f"sparsetrain:{version}-cuda"}


def image_name(image: str) -> str:
    """``registry/path/sparsetrain:tag`` -> ``sparsetrain:tag``."""
    return image.rsplit("/", 1)[-1]


def dockerfile(root: Path, rel: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in read(root, rel).splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    instructions = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def instruction(root: Path, rel: str, keyword: str) -> list[str]:
    return [args for key, args in dockerfile(root, rel) if key == keyword]


def last_json(root: Path, rel: str, keyword: str) -> list[str]:
    found = instruction(root, rel, keyword)
    assert found, f"{rel} has no {keyword}"
    value = json.loads(found[-1])
    assert isinstance(value, list), f"{rel}: {keyword} should be in exec (JSON) form"
    return value


def env_assignments(arguments: str) -> dict[str, str]:
    """``ENV A=1 B=2`` -> {"A": "1", "B": "2"}."""
    pairs = {}
    for token in arguments.split():
        name, sep, value = token.partition("=")
        assert sep, f"ENV {arguments!r}: use NAME=value"
        pairs[name] = value
    return pairs


def container_env(container: dict[str, Any]) -> dict[str, str | None]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def compose_env(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return {k: v for k, _, v in (item.partition("=") for item in environment)}
    return {str(k): None if v is None else str(v) for k, v in environment.items()}


def compose_ports(service: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(host port or None, container port) for each short-syntax port mapping."""
    ports = []
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        host = int(parts[-2]) if len(parts) >= 2 else None
        ports.append((host, int(parts[-1])))
    return ports


def compose_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) for each short-syntax volume."""
    mounts = []
    for entry in service.get("volumes", []):
        parts = str(entry).split(":")
        assert len(parts) >= 2, f"volume {entry!r}: expected source:target"
        mounts.append((parts[0], parts[1]))
    return mounts


def pod_templates(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", cluster["spec"]["headGroupSpec"]["template"]
    for group in cluster["spec"]["workerGroupSpecs"]:
        yield group["groupName"], group["template"]


def named_port(container: dict[str, Any], port: int | str) -> int:
    """A container port given as a number or by name."""
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def settings_env_names() -> set[str]:
    """SPARSETRAIN_<FIELD> for every Settings field, plus explicit aliases."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in Settings.model_fields.items():
        names.add(f"{prefix}{field_name}".upper())
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias] if isinstance(alias, str) else [])
        names.update(str(choice).upper() for choice in choices if isinstance(choice, str))
    return names


def telemetry_metrics(root: Path) -> dict[str, str]:
    """Metric name -> "counter"/"gauge" for every ray.util.metrics metric in telemetry.py,
    f-string names expanded over their ``for <var> in (...)`` tuple."""
    text = read(root, TELEMETRY)
    metrics: dict[str, str] = {}
    for kind, name in re.findall(r'\b(Counter|Gauge|Histogram)\(\s*"(sparsetrain_\w+)"', text):
        metrics[name] = kind.lower()
    for kind, template in re.findall(r'\b(Counter|Gauge|Histogram)\(\s*f"([^"]+)"', text):
        variables = re.findall(r"\{(\w+)\}", template)
        assert len(variables) == 1, f"{TELEMETRY}: cannot expand metric name {template!r}"
        loop = re.search(rf"for {variables[0]} in (\([^)]*\))", text)
        assert loop, f"{TELEMETRY}: no loop gives {variables[0]!r} for {template!r}"
        for value in ast.literal_eval(loop.group(1)):
            metrics[template.replace(f"{{{variables[0]}}}", value)] = kind.lower()
    assert len(metrics) >= 5, f"{TELEMETRY}: found only {sorted(metrics)}"
    return metrics


def control_plane_metrics(root: Path) -> dict[str, str]:
    """Metric name -> type for the control plane's /metrics (its ``# TYPE`` lines)."""
    found = re.findall(
        r"# TYPE (sparsetrain_\w+) (counter|gauge|histogram)", read(root, OBSERVABILITY)
    )
    assert found, f"{OBSERVABILITY}: no '# TYPE' lines found"
    return dict(found)


# ---- checks ---------------------------------------------------------------------------------


def check_yaml_parses(root: Path) -> None:
    """Every YAML file under deploy/ parses (all documents) into mappings."""
    files = sorted((root / "deploy").rglob("*.y*ml"))
    assert len(files) >= 7, f"expected the deploy YAML files, found {files}"
    for path in files:
        yaml_docs(root, str(path.relative_to(root)))


def check_dockerfiles(root: Path) -> None:
    """Bases, COPY sources that exist, pinned installs, non-root user, command, health check."""
    for rel in (DOCKERFILE, DOCKERFILE_CUDA):
        for args in instruction(root, rel, "COPY"):
            tokens = [t for t in args.split() if not t.startswith("--")]
            assert "--from" not in args, f"{rel}: unexpected multi-stage COPY {args!r}"
            assert len(tokens) >= 2, f"{rel}: COPY {args!r}"
            for source in tokens[:-1]:
                assert (root / source.rstrip("/")).exists(), f"{rel}: COPY source {source} missing"
        copied = {
            token.rstrip("/")
            for args in instruction(root, rel, "COPY")
            for token in args.split()[:-1]
            if not token.startswith("--")
        }
        assert {"pyproject.toml", "constraints.txt", "README.md"} <= copied, rel
        assert {"api", "service", "workers", ENTRYPOINT} <= copied, rel
        installs = [
            part
            for run in instruction(root, rel, "RUN")
            for part in run.split("&&")
            if "pip install" in part and ".[server]" in part
        ]
        assert installs, f"{rel}: no `pip install ... '.[server]'`"
        for part in installs:
            assert re.search(r"\s-c\s+\S*constraints", part), f"{rel}: unpinned install {part!r}"
        assert "constraints.txt" in " ".join(instruction(root, rel, "RUN")), rel
        users = instruction(root, rel, "USER")
        assert users, f"{rel}: no USER"
        assert users[-1].split(":")[0] not in {"root", "0"}, f"{rel}: runs as root"
        assert last_json(root, rel, "CMD") == SERVE_COMMAND, f"{rel}: CMD"
        entrypoint = last_json(root, rel, "ENTRYPOINT")
        assert "/usr/local/bin/sparsetrain-entrypoint" in entrypoint, f"{rel}: ENTRYPOINT"
        assert f"{ENTRYPOINT} /usr/local/bin/sparsetrain-entrypoint" in " ".join(
            instruction(root, rel, "COPY")
        ), f"{rel}: the entrypoint script is not copied to where ENTRYPOINT runs it"
        health = " ".join(instruction(root, rel, "HEALTHCHECK"))
        assert "python" in health and f":{API_PORT}/healthz" in health, f"{rel}: HEALTHCHECK"
        assert "curl" not in health, f"{rel}: the base has no curl"
        ignore = read(root, f"{rel}.dockerignore").splitlines()
        for source in copied:
            top = source if source.startswith("deploy/") else source.split("/")[0]
            assert f"!{top}" in ignore, f"{rel}.dockerignore leaves out {top}, which is copied"
    assert re.search(r"^sparsetrain\s*=", read(root, "pyproject.toml"), re.M), "no console script"

    cpu_base = instruction(root, DOCKERFILE, "FROM")
    assert len(cpu_base) == 1 and re.fullmatch(r"python:3\.\d+-slim", cpu_base[0]), cpu_base
    cpu_python = re.search(r"python:(3\.\d+)", cpu_base[0])
    assert cpu_python
    cuda_text = read(root, DOCKERFILE_CUDA)
    base_arg = re.search(r"^ARG BASE_IMAGE=(\S+)$", cuda_text, re.M)
    assert base_arg, f"{DOCKERFILE_CUDA}: no ARG BASE_IMAGE"
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", base_arg.group(1))
    assert instruction(root, DOCKERFILE_CUDA, "FROM") == ["${BASE_IMAGE}"]
    guard = re.search(r"version_info\[:2\]\s*==\s*\((\d+),\s*(\d+)\)", cuda_text)
    assert guard, f"{DOCKERFILE_CUDA}: no Python version guard"
    assert f"{guard.group(1)}.{guard.group(2)}" == cpu_python.group(1), (
        "the CUDA image must check for the CPU image's Python (Ray needs one Python everywhere)"
    )
    # The CUDA image keeps the base's torch: it pins the installed version and installs no torch.
    assert "torch.__version__" in cuda_text, f"{DOCKERFILE_CUDA}: torch is not pinned to the base's"
    for run in instruction(root, DOCKERFILE_CUDA, "RUN"):
        for part in run.split("&&"):
            if "pip install" in part:
                words = [w.strip("'\"") for w in part.split()]
                assert not any(re.fullmatch(r"torch([=<>~!].*)?", w) for w in words), (
                    f"{DOCKERFILE_CUDA} installs torch: {part!r}"
                )


def check_entrypoint(root: Path) -> None:
    """The entrypoint is valid sh, joins Ray before serving, and execs the command."""
    text = read(root, ENTRYPOINT)
    assert text.startswith("#!/bin/sh"), f"{ENTRYPOINT}: expected a /bin/sh script"
    assert 'ray start --address="$address" --num-cpus=0 --num-gpus=0' in text, ENTRYPOINT
    assert 'exec "$@"' in text, ENTRYPOINT
    for name in ("RAY_ADDRESS", "SPARSETRAIN_RAY_ADDRESS", "JOIN_RAY_ARGS"):
        assert f"${{{name}" in text, f"{ENTRYPOINT} does not read {name}"
    shell = shutil.which("sh")
    if shell is not None:
        result = subprocess.run(
            [shell, "-n", str(root / ENTRYPOINT)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{ENTRYPOINT}: {result.stderr}"


def check_images(root: Path) -> None:
    """Every sparsetrain image named anywhere is one a Dockerfile documents that it builds."""
    expected = images(root)
    documented = {}
    for rel in (DOCKERFILE, DOCKERFILE_CUDA, DOCS, README):
        for path, tag in re.findall(
            r"docker build -f (\S+)\s+(?:.*?\s)?-t (\S+) \.", read(root, rel)
        ):
            documented.setdefault(path, set()).add(tag)
    for rel, tag in expected.items():
        assert documented.get(rel) == {tag}, f"{rel} is documented to build {documented.get(rel)}"
    for rel in (DOCKERFILE, DOCKERFILE_CUDA):
        assert f"-t {expected[rel]} ." in read(root, rel), f"{rel}: header build command"
    known = set(expected.values())

    compose = yaml_doc(root, COMPOSE)
    for name, service in compose["services"].items():
        image = str(service.get("image", ""))
        if "build" in service:
            dockerfile_rel = str(Path(service["build"]["dockerfile"]))
            assert (root / "deploy" / service["build"]["context"]).resolve() == root.resolve()
            assert image == expected.get(dockerfile_rel), f"compose {name}: {image!r}"
        if image.startswith("sparsetrain"):
            assert image in known, f"compose {name}: unknown image {image!r}"
    for name in ("ray-head", "ray-worker", "service"):
        assert compose["services"][name]["image"] == expected[DOCKERFILE], f"compose {name}"

    cluster = one_of_kind(yaml_docs(root, RAYCLUSTER), "RayCluster", RAYCLUSTER)
    for group, template in pod_templates(cluster):
        for container in template["spec"]["containers"]:
            image = image_name(container["image"])
            assert image in known, f"{RAYCLUSTER} {group}: unknown image {image!r}"
            gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)
            want = expected[DOCKERFILE_CUDA] if int(gpus) > 0 else expected[DOCKERFILE]
            assert image == want, f"{RAYCLUSTER} {group}: {image!r}, expected {want!r}"
    deployment = one_of_kind(yaml_docs(root, SERVICE), "Deployment", SERVICE)
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert image_name(container["image"]) == expected[DOCKERFILE], f"{SERVICE}: image"


def check_raycluster(root: Path) -> None:
    """A ray.io/v1 RayCluster: head group, autoscaling GPU group, shared /data claim."""
    docs = yaml_docs(root, RAYCLUSTER)
    cluster = one_of_kind(docs, "RayCluster", RAYCLUSTER)
    assert cluster["apiVersion"] == "ray.io/v1", cluster["apiVersion"]
    spec = cluster["spec"]
    assert spec.get("rayVersion") == pinned(root, "ray"), "rayVersion must be the pinned Ray"
    assert spec.get("enableInTreeAutoscaling") is True, "autoscaling is off"
    head = spec["headGroupSpec"]
    params = head["rayStartParams"]
    assert params.get("dashboard-host") == "0.0.0.0", params
    assert params.get("metrics-export-port") == str(RAY_METRICS_PORT), params
    groups = spec.get("workerGroupSpecs")
    assert isinstance(groups, list) and groups, "no workerGroupSpecs"
    gpu_groups = []
    for group in groups:
        name = group.get("groupName")
        assert name, "a worker group has no groupName"
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        assert isinstance(low, int) and isinstance(high, int), f"group {name}: min/maxReplicas"
        assert 0 <= low <= high and high >= 1, f"group {name}: minReplicas {low}, max {high}"
        replicas = group.get("replicas", low)
        assert low <= replicas <= high, f"group {name}: replicas {replicas} outside [{low}, {high}]"
        container = group["template"]["spec"]["containers"][0]
        limits = container.get("resources", {}).get("limits", {})
        if int(limits.get("nvidia.com/gpu", 0)) >= 1:
            requests = container["resources"].get("requests", {})
            assert requests.get("nvidia.com/gpu") in (None, limits["nvidia.com/gpu"]), name
            gpu_groups.append(name)
    assert gpu_groups, "no worker group has an nvidia.com/gpu limit"
    for params in [head["rayStartParams"]] + [g.get("rayStartParams", {}) for g in groups]:
        for key, value in params.items():
            assert isinstance(value, str), f"rayStartParams {key}: {value!r} must be a string"

    claim = data_claim(root)
    for group, template in pod_templates(cluster):
        pod = template["spec"]
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
        assert volumes.get(mounts.get(DATA_DIR, "")) == claim, f"{group}: {claim} not at /data"
        env = container_env(pod["containers"][0])
        assert env.get("SPARSETRAIN_DATA_DIR") == DATA_DIR, f"{group}: SPARSETRAIN_DATA_DIR"


def data_claim(root: Path) -> str:
    """The ReadWriteMany claim in service.yaml that holds /data."""
    claims = of_kind(yaml_docs(root, SERVICE), "PersistentVolumeClaim")
    shared = [c for c in claims if "ReadWriteMany" in c["spec"].get("accessModes", [])]
    assert len(shared) == 1, f"{SERVICE}: expected one ReadWriteMany claim, found {len(shared)}"
    assert shared[0]["spec"]["resources"]["requests"]["storage"], f"{SERVICE}: claim size"
    return str(shared[0]["metadata"]["name"])


def check_kuberay_service(root: Path) -> None:
    """The control plane's Deployment, Service and claims fit together."""
    docs = yaml_docs(root, SERVICE)
    deployment = one_of_kind(docs, "Deployment", SERVICE)
    service = one_of_kind(docs, "Service", SERVICE)
    assert deployment["apiVersion"] == "apps/v1" and service["apiVersion"] == "v1"
    spec = deployment["spec"]
    assert spec["replicas"] == 1, "the control plane runs one replica"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items(), "selector != pod labels"
    assert service["spec"]["selector"].items() <= labels.items(), "Service selects no pod"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container, "use args: `command` would skip the image's entrypoint"
    assert container["args"] == SERVE_COMMAND, container.get("args")
    env = container_env(container)
    cluster = one_of_kind(yaml_docs(root, RAYCLUSTER), "RayCluster", RAYCLUSTER)
    head_service = f"{cluster['metadata']['name']}-head-svc"
    assert env.get("RAY_ADDRESS") == f"{head_service}:{GCS_PORT}", env.get("RAY_ADDRESS")
    assert env.get("SPARSETRAIN_DATA_DIR") == DATA_DIR
    assert str(env.get("SPARSETRAIN_STORAGE", "")).startswith(f"{DATA_DIR}/")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness: /readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness: /healthz"

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claim = data_claim(root)
    data_volume = volumes[mounts[DATA_DIR]]
    assert data_volume["persistentVolumeClaim"]["claimName"] == claim, "/data is not the claim"
    tokens_file = env.get("SPARSETRAIN_API_TOKENS_FILE")
    assert tokens_file, "SPARSETRAIN_API_TOKENS_FILE is not set"
    secret_mounts = [path for path, name in mounts.items() if "secret" in volumes.get(name, {})]
    assert any(tokens_file.startswith(f"{path}/") for path in secret_mounts), (
        f"{tokens_file} is not inside a mounted Secret"
    )
    claims = {c["metadata"]["name"] for c in of_kind(docs, "PersistentVolumeClaim")}
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims, volume


def check_ports(root: Path) -> None:
    """API 8000, Ray GCS 6379, dashboard 8265 and Ray metrics 8080 agree across files."""
    for rel in (DOCKERFILE, DOCKERFILE_CUDA):
        assert instruction(root, rel, "EXPOSE") == [str(API_PORT)], f"{rel}: EXPOSE"

    compose = yaml_doc(root, COMPOSE)["services"]
    api = compose["service"]
    assert (API_PORT, API_PORT) in compose_ports(api), f"compose service ports {api.get('ports')}"
    if "command" in api:
        assert api["command"] == SERVE_COMMAND, api["command"]
    head_ports = [container for _, container in compose_ports(compose["ray-head"])]
    assert DASHBOARD_PORT in head_ports and GCS_PORT in head_ports, head_ports
    head_command = compose["ray-head"]["command"]
    for flag in ("--head", f"--port={GCS_PORT}", "--dashboard-host=0.0.0.0", "--block"):
        assert flag in head_command, f"compose ray-head command lacks {flag}"
    assert f"--metrics-export-port={RAY_METRICS_PORT}" in head_command
    for name, service in compose.items():
        command = service.get("command") or []
        if name != "ray-head" and "ray" in command[:1]:
            assert f"--address=ray-head:{GCS_PORT}" in command, f"compose {name}: --address"
            assert f"--metrics-export-port={RAY_METRICS_PORT}" in command, name
    address = compose_env(api).get("RAY_ADDRESS")
    assert address == f"ray-head:{GCS_PORT}", f"compose service RAY_ADDRESS {address}"
    assert f"--metrics-export-port={RAY_METRICS_PORT}" in str(compose_env(api)["JOIN_RAY_ARGS"])

    cluster = one_of_kind(yaml_docs(root, RAYCLUSTER), "RayCluster", RAYCLUSTER)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert named_port(head, "gcs-server") == GCS_PORT
    assert named_port(head, "dashboard") == DASHBOARD_PORT
    for group, template in pod_templates(cluster):
        container = template["spec"]["containers"][0]
        assert named_port(container, "metrics") == RAY_METRICS_PORT, group
        annotations = template.get("metadata", {}).get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(RAY_METRICS_PORT), group

    docs = yaml_docs(root, SERVICE)
    deployment = one_of_kind(docs, "Deployment", SERVICE)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert named_port(container, "http") == API_PORT
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert named_port(container, container[probe]["httpGet"]["port"]) == API_PORT, probe
    service = one_of_kind(docs, "Service", SERVICE)
    by_port = {p["port"]: p for p in service["spec"]["ports"]}
    assert API_PORT in by_port, f"{SERVICE}: Service has no port {API_PORT}"
    assert named_port(container, by_port[API_PORT]["targetPort"]) == API_PORT, "targetPort"
    env = container_env(container)
    assert str(env.get("RAY_ADDRESS", "")).endswith(f":{GCS_PORT}")
    assert f"--metrics-export-port={RAY_METRICS_PORT}" in str(env.get("JOIN_RAY_ARGS"))
    assert named_port(container, "metrics") == RAY_METRICS_PORT


def check_compose(root: Path) -> None:
    """One host: head, worker and service share the named volume at /data; the order is right."""
    compose = yaml_doc(root, COMPOSE)
    services = compose["services"]
    for name in ("ray-head", "ray-worker", "service"):
        assert name in services, f"{COMPOSE} has no service {name}"
    named_volumes = set(compose.get("volumes") or {})
    sources = set()
    for name, service in services.items():
        command = service.get("command") or []
        if name == "service" or "ray" in command[:1]:
            mounts = {target: source for source, target in compose_mounts(service)}
            source = mounts.get(DATA_DIR)
            assert source in named_volumes, f"compose {name}: /data is not a named volume"
            sources.add(source)
            assert service.get("shm_size"), f"compose {name}: Ray needs a larger /dev/shm"
    assert len(sources) == 1, f"compose: /data comes from different volumes {sources}"
    env = compose_env(services["service"])
    assert env.get("SPARSETRAIN_DATA_DIR") == DATA_DIR, env
    assert str(env.get("SPARSETRAIN_STORAGE", "")).startswith(f"{DATA_DIR}/"), env
    for name in ("ray-worker", "service"):
        assert "ray-head" in services[name].get("depends_on", {}), f"compose {name}: depends_on"
    for name in ("prometheus", "grafana"):
        assert services[name].get("profiles"), f"compose {name} should be optional (a profile)"


def check_env_names(root: Path) -> None:
    """Every variable the files set is a Settings field (SPARSETRAIN_*) or a known other one."""
    known = settings_env_names()
    assert "SPARSETRAIN_STORAGE" in known and "RAY_ADDRESS" in known, sorted(known)
    used: dict[str, str] = {}
    for rel in (DOCKERFILE, DOCKERFILE_CUDA):
        for args in instruction(root, rel, "ENV"):
            used.update(dict.fromkeys(env_assignments(args), rel))
    for name, service in yaml_doc(root, COMPOSE)["services"].items():
        used.update(dict.fromkeys(compose_env(service), f"{COMPOSE} {name}"))
    cluster = one_of_kind(yaml_docs(root, RAYCLUSTER), "RayCluster", RAYCLUSTER)
    for group, template in pod_templates(cluster):
        for container in template["spec"]["containers"]:
            used.update(dict.fromkeys(container_env(container), f"{RAYCLUSTER} {group}"))
    deployment = one_of_kind(yaml_docs(root, SERVICE), "Deployment", SERVICE)
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        used.update(dict.fromkeys(container_env(container), SERVICE))
    assert len(used) >= 10, sorted(used)
    for name, where in used.items():
        if name.startswith("SPARSETRAIN_"):
            assert name in known, f"{where}: {name} is not a Settings field"
        else:
            assert name in OTHER_ENV or name.startswith("GF_"), f"{where}: unknown {name}"


def check_dashboard(root: Path) -> None:
    """Every panel queries something, and every metric it names is exported by the code."""
    try:
        dashboard = json.loads(read(root, DASHBOARD))
    except json.JSONDecodeError as error:
        raise AssertionError(f"{DASHBOARD} does not parse: {error}") from None
    assert dashboard.get("uid") and dashboard.get("title"), "dashboard uid/title"
    panels = dashboard.get("panels")
    assert isinstance(panels, list) and panels, "no panels"
    expressions = []
    ids = []
    for panel in panels:
        title = panel.get("title")
        assert panel.get("type") != "row", "rows are not used (every panel must query)"
        ids.append(panel.get("id"))
        targets = panel.get("targets")
        assert isinstance(targets, list) and targets, f"panel {title!r} has no targets"
        for target in targets:
            expr = target.get("expr")
            assert isinstance(expr, str) and expr.strip(), f"panel {title!r}: empty expression"
            assert target.get("refId"), f"panel {title!r}: a target has no refId"
            expressions.append(expr)
    assert len(set(ids)) == len(ids), f"panel ids repeat: {ids}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("job_id", "rank"):
        assert name in variables, f"no template variable {name}"
        assert variables[name]["type"] == "query", name
        expressions.append(str(variables[name]["definition"]))

    telemetry = telemetry_metrics(root)
    control = control_plane_metrics(root)
    used = set()
    for expr in expressions:
        for name in re.findall(r"\b(?:ray_)?sparsetrain_\w+", expr):
            used.add(exported_metric(name, telemetry, control))
    missing = (set(telemetry) | set(control)) - used
    assert not missing, f"the dashboard shows none of {sorted(missing)}"


def exported_metric(series: str, telemetry: dict[str, str], control: dict[str, str]) -> str:
    """The code's metric behind a Prometheus series name; raises if there is none.

    Ray exports ray.util.metrics as ``ray_<name>``, counters as ``ray_<name>_total``. The
    control plane's metrics are scraped directly, without a prefix."""
    if series.startswith("ray_"):
        name = series.removeprefix("ray_")
        if telemetry.get(name) == "gauge":
            return name
        base = name.removesuffix("_total")
        if name.endswith("_total") and telemetry.get(base) == "counter":
            return base
        if telemetry.get(name) == "counter":
            raise AssertionError(f"{series}: Ray exports counter {name} as ray_{name}_total")
        raise AssertionError(f"{series}: no such metric in {TELEMETRY}")
    if series in telemetry:
        raise AssertionError(f"{series}: Ray exports it as ray_{series}")
    if series in control:
        return series
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if series.endswith(suffix) and control.get(base) == "histogram":
            return base
    raise AssertionError(f"{series}: no such metric in {OBSERVABILITY}")


def check_monitoring_config(root: Path) -> None:
    """Prometheus and Grafana for compose point at what compose runs and mounts."""
    compose = yaml_doc(root, COMPOSE)["services"]
    prometheus = yaml_doc(root, PROMETHEUS)
    jobs = prometheus["scrape_configs"]
    targets = {
        target: job
        for job in jobs
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    api_target = f"service:{API_PORT}"
    assert api_target in targets, f"{PROMETHEUS} does not scrape {api_target}"
    assert targets[api_target].get("metrics_path", "/metrics") == "/metrics"
    assert "service" in compose, "the scraped host is not a compose service"
    sd_files = [f for job in jobs for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert RAY_SD_FILE in sd_files, f"{PROMETHEUS} does not read {RAY_SD_FILE}"

    sd_dir = str(Path(RAY_SD_FILE).parent)
    head_volume = {t: s for s, t in compose_mounts(compose["ray-head"])}.get(sd_dir)
    prom_mounts = {t: s for s, t in compose_mounts(compose["prometheus"])}
    assert head_volume and prom_mounts.get(sd_dir) == head_volume, "Prometheus can't see /tmp/ray"
    config_flag = next(a for a in compose["prometheus"]["command"] if a.startswith("--config"))
    config_path = config_flag.split("=", 1)[1]
    assert Path(prom_mounts[config_path]) == Path("./monitoring/prometheus.yml"), prom_mounts

    grafana_mounts = {t: s for s, t in compose_mounts(compose["grafana"])}
    for source in grafana_mounts.values():
        if source.startswith("."):
            assert (root / "deploy" / source).exists(), f"compose grafana mounts missing {source}"
    assert Path(grafana_mounts["/etc/grafana/provisioning"]) == Path(
        "./monitoring/grafana/provisioning"
    )
    providers = yaml_doc(root, GRAFANA_PROVIDERS)["providers"]
    paths = {p["options"]["path"] for p in providers}
    dashboards_at = next(
        t for t, s in grafana_mounts.items() if Path(s) == Path("./monitoring/grafana/dashboards")
    )
    assert dashboards_at in paths, f"no dashboard provider reads {dashboards_at}"
    (source,) = yaml_doc(root, GRAFANA_DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose
    dashboard = json.loads(read(root, DASHBOARD))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"], "datasource uid"


def check_monitoring_k8s(root: Path) -> None:
    """The ServiceMonitor and PodMonitor select what service.yaml and raycluster.yaml create."""
    docs = yaml_docs(root, MONITORING)
    service = one_of_kind(yaml_docs(root, SERVICE), "Service", SERVICE)
    monitor = one_of_kind(docs, "ServiceMonitor", MONITORING)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "ServiceMonitor selector"
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert set(endpoints) <= set(service_ports), f"unknown ports {set(endpoints)}"
    api = next(n for n, p in service_ports.items() if p["port"] == API_PORT)
    assert endpoints[api]["path"] == "/metrics"
    assert endpoints[api]["authorization"]["credentials"]["name"], "no bearer token for /metrics"
    cluster = one_of_kind(yaml_docs(root, RAYCLUSTER), "RayCluster", RAYCLUSTER)
    pods = one_of_kind(docs, "PodMonitor", MONITORING)
    labels = pods["spec"]["selector"]["matchLabels"]
    assert labels == {"ray.io/cluster": cluster["metadata"]["name"]}, labels
    for endpoint in pods["spec"]["podMetricsEndpoints"]:
        for _, template in pod_templates(cluster):
            assert named_port(template["spec"]["containers"][0], endpoint["port"]) > 0


def check_docs(root: Path) -> None:
    """docs/deploy.md covers the deployments and names the files it describes."""
    text = read(root, DOCS)
    for needle in (
        "docker compose -f deploy/compose.yaml",
        "RAY_ADDRESS",
        "sparsetrain-head-svc",
        "ReadWriteMany",
        "SPARSETRAIN_STORAGE",
        'printf %s "$TOKEN" | sha256sum',
        "workers.gpus",
        '"gpus"',
        RAY_SD_FILE,
    ):
        assert needle in text, f"{DOCS} does not mention {needle!r}"
    for rel in re.findall(r"`(deploy/[\w./-]+)`", text):
        assert (root / rel).exists(), f"{DOCS} names {rel}, which does not exist"


CHECKS: list[Callable[[Path], None]] = [
    check_yaml_parses,
    check_dockerfiles,
    check_entrypoint,
    check_images,
    check_raycluster,
    check_kuberay_service,
    check_ports,
    check_compose,
    check_env_names,
    check_dashboard,
    check_monitoring_config,
    check_monitoring_k8s,
    check_docs,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_check(check: Callable[[Path], None]) -> None:
    check(REPO)


# ---- every check can fail -------------------------------------------------------------------


def _replace(rel: str, old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / rel
        text = path.read_text()
        assert old in text, f"the broken copy needs {old!r} in {rel}"
        path.write_text(text.replace(old, new, count))

    return mutate


def _sub(rel: str, pattern: str, new: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / rel
        text, count = re.subn(pattern, new, path.read_text(), count=1)
        assert count == 1, f"the broken copy needs {pattern!r} in {rel}"
        path.write_text(text)

    return mutate


def _edit_dashboard(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / DASHBOARD
        dashboard = json.loads(path.read_text())
        edit(dashboard)
        path.write_text(json.dumps(dashboard))

    return mutate


def _blank_first_expr(dashboard: dict[str, Any]) -> None:
    dashboard["panels"][0]["targets"][0]["expr"] = " "


def _drop_rank_variable(dashboard: dict[str, Any]) -> None:
    variables = dashboard["templating"]["list"]
    dashboard["templating"]["list"] = [v for v in variables if v["name"] != "rank"]


BROKEN: list[tuple[str, Callable[[Path], None], Callable[[Path], None]]] = [
    ("yaml-syntax", check_yaml_parses, _replace(RAYCLUSTER, "spec:\n", "spec: [unclosed\n")),
    ("service-target-port", check_ports, _replace(SERVICE, "targetPort: http", "targetPort: 8001")),
    ("expose", check_ports, _replace(DOCKERFILE, "EXPOSE 8000", "EXPOSE 8001")),
    (
        "compose-gcs-port",
        check_ports,
        _replace(COMPOSE, "RAY_ADDRESS: ray-head:6379", "RAY_ADDRESS: ray-head:6380"),
    ),
    (
        "compose-api-port",
        check_ports,
        _replace(COMPOSE, '"127.0.0.1:8000:8000"', '"127.0.0.1:8000:8080"'),
    ),
    (
        "head-svc",
        check_kuberay_service,
        _replace(SERVICE, "sparsetrain-head-svc:6379", "sparsetrain-head:6379"),
    ),
    (
        "env-typo",
        check_env_names,
        _replace(SERVICE, "name: SPARSETRAIN_STORAGE", "name: SPARSETRAIN_STORGE"),
    ),
    ("compose-bind-data", check_compose, _replace(COMPOSE, "- data:/data", "- ./data:/data")),
    (
        "compose-no-depends",
        check_compose,
        _replace(COMPOSE, "    depends_on:\n      ray-head:", "    x-depends_on:\n      ray-head:"),
    ),
    ("env-unknown", check_env_names, _replace(COMPOSE, "JOIN_RAY_ARGS:", "JOIN_RAY_FLAGS:")),
    (
        "image-tag",
        check_images,
        _sub(RAYCLUSTER, r"image: sparsetrain:\S+-cuda", "image: sparsetrain:0.0.0-cuda"),
    ),
    (
        "image-cpu-on-gpu",
        check_images,
        _sub(RAYCLUSTER, r"(image: sparsetrain:\S+)-cuda", r"\1"),
    ),
    (
        "documented-tag",
        check_images,
        _sub(DOCKERFILE, r"-t sparsetrain:\S+ \.", "-t sparsetrain:latest ."),
    ),
    (
        "no-gpu-limit",
        check_raycluster,
        _replace(RAYCLUSTER, "nvidia.com/gpu: 1", "example.com/fpga: 1", count=2),
    ),
    ("min-over-max", check_raycluster, _replace(RAYCLUSTER, "minReplicas: 0", "minReplicas: 9")),
    (
        "api-version",
        check_raycluster,
        _replace(RAYCLUSTER, "apiVersion: ray.io/v1", "apiVersion: ray.io/v1alpha1"),
    ),
    (
        "start-param-int",
        check_raycluster,
        _replace(RAYCLUSTER, 'metrics-export-port: "8080"', "metrics-export-port: 8080"),
    ),
    (
        "ray-version",
        check_raycluster,
        _sub(RAYCLUSTER, r'rayVersion: "[^"]+"', 'rayVersion: "0.0.0"'),
    ),
    ("pvc-rwo", check_kuberay_service, _replace(SERVICE, "- ReadWriteMany", "- ReadWriteOnce")),
    ("deployment-command", check_kuberay_service, _replace(SERVICE, "args: [", "command: [")),
    ("readiness", check_kuberay_service, _replace(SERVICE, "path: /readyz", "path: /healthz")),
    (
        "metric-typo",
        check_dashboard,
        _replace(DASHBOARD, "ray_sparsetrain_density", "ray_sparsetrain_densty"),
    ),
    (
        "metric-no-prefix",
        check_dashboard,
        _replace(DASHBOARD, "(ray_sparsetrain_loss{", "(sparsetrain_loss{"),
    ),
    (
        "counter-no-total",
        check_dashboard,
        _replace(DASHBOARD, "ray_sparsetrain_steps_total{", "ray_sparsetrain_steps{"),
    ),
    (
        "control-plane-prefix",
        check_dashboard,
        _replace(DASHBOARD, "by (status) (sparsetrain_jobs)", "by (status) (ray_sparsetrain_jobs)"),
    ),
    ("empty-expr", check_dashboard, _edit_dashboard(_blank_first_expr)),
    ("no-rank-variable", check_dashboard, _edit_dashboard(_drop_rank_variable)),
    ("json-syntax", check_dashboard, _replace(DASHBOARD, "{", "{,")),
    (
        "copy-missing",
        check_dockerfiles,
        _replace(DOCKERFILE, "COPY workers/ workers/", "COPY worker/ workers/"),
    ),
    (
        "no-constraints",
        check_dockerfiles,
        _replace(DOCKERFILE, "pip install -c constraints.txt", "pip install"),
    ),
    ("root-user", check_dockerfiles, _replace(DOCKERFILE_CUDA, "USER 1000:1000", "USER root")),
    (
        "cuda-installs-torch",
        check_dockerfiles,
        _replace(DOCKERFILE_CUDA, "'.[server]' $EXTRA", "'.[server]' torch $EXTRA"),
    ),
    ("entrypoint-syntax", check_entrypoint, _replace(ENTRYPOINT, "    esac\nfi", "fi")),
    (
        "sd-file",
        check_monitoring_config,
        _replace(PROMETHEUS, "prom_metrics_service_discovery", "prom_sd"),
    ),
    (
        "datasource-uid",
        check_monitoring_config,
        _replace(GRAFANA_DATASOURCES, "uid: prometheus", "uid: prom"),
    ),
    ("monitor-port", check_monitoring_k8s, _replace(MONITORING, "- port: metrics", "- port: ray")),
    (
        "docs-missing-file",
        check_docs,
        _replace(DOCS, "`deploy/compose.yaml`", "`deploy/docker-compose.yaml`"),
    ),
]


@pytest.fixture
def broken_root(tmp_path: Path) -> Path:
    """A copy of everything the checks read."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for rel in ("deploy", "api", "service", "workers"):
        shutil.copytree(REPO / rel, tmp_path / rel, ignore=ignore)
    for rel in ("pyproject.toml", "constraints.txt", "README.md", DOCS):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    return tmp_path


def test_checks_pass_on_an_intact_copy(broken_root: Path) -> None:
    for check in CHECKS:
        check(broken_root)


@pytest.mark.parametrize(
    ("check", "mutate"), [(c, m) for _, c, m in BROKEN], ids=[name for name, _, _ in BROKEN]
)
def test_check_fails_on_a_broken_copy(
    broken_root: Path, check: Callable[[Path], None], mutate: Callable[[Path], None]
) -> None:
    mutate(broken_root)
    with pytest.raises(AssertionError):
        check(broken_root)


def test_every_check_is_exercised_by_a_broken_copy() -> None:
    assert {check for _, check, _ in BROKEN} == set(CHECKS)
