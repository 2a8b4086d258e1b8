"""The deployment kits (issue 15): the container image's definition, the Helm chart and
the systemd unit, checked with what runs here (no Docker engine, no cluster).

- The chart: ``helm lint --strict``; its manifests, rendered, decode strictly into the
  Kubernetes API's own Go types (``scripts/k8s-check``: an unknown or misspelt field
  fails); its probes, preStop hook and autoscaling metric work against a real node.
- The image: the wheel its build stage installs serves the node's pages when installed
  alone; its ``ENV`` + ``CMD`` start a node; its ``HEALTHCHECK`` tells a live node from
  a dead one and keeps a draining node healthy.
- The unit: ``systemd-analyze verify`` has nothing to say; its ``ExecStart`` runs a node;
  its ``ExecStop`` drains it and the ``SIGTERM`` after it stops it inside
  ``TimeoutStopSec``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from herald.config import Settings
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.sse import open_stream

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "herald"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
UNIT = ROOT / "deploy" / "systemd" / "herald.service"
#: Environment variables read by the CLI rather than by ``Settings``.
CLI_ENV = {"HERALD_URL"}


@pytest.fixture(scope="module")
def tools() -> Path:
    built = subprocess.run(
        [str(ROOT / "scripts" / "install-deploy-tools.sh")], capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


def render(tools: Path, *sets: str) -> str:
    argv = [str(tools / "helm"), "template", "herald", str(CHART)]
    for value in sets:
        argv += ["--set", value]
    rendered = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    return rendered.stdout


def manifests(text: str) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def container(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec = rendered["Deployment"]["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


def setting_names() -> set[str]:
    return {f"HERALD_{name.upper()}" for name in Settings.model_fields}


def metric_names(gateway: GatewayProcess) -> set[str]:
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def status(gateway: GatewayProcess, path: str) -> int:
    return httpx.get(f"{gateway.url}{path}", timeout=5).status_code


# --- the Helm chart

EVERYTHING = (
    "autoscaling.enabled=true",
    "ingress.enabled=true",
    "serviceMonitor.enabled=true",
    "redis.url=redis://redis:6379/0",
    "jwt.existingSecret=herald-jwt",
    "env.HERALD_LOG_FORMAT=json",
)


def test_the_chart_lints_and_renders_manifests_the_kubernetes_api_types_accept(tools: Path) -> None:
    lint = subprocess.run(
        [str(tools / "helm"), "lint", "--strict", str(CHART), *[f"--set={v}" for v in EVERYTHING]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for sets in ((), EVERYTHING):
        text = render(tools, *sets)
        checked = subprocess.run(
            [str(tools / "k8s-check")], input=text, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stderr
        kinds = set(re.findall(r"^ok \S+ (\S+)$", checked.stdout, re.MULTILINE))
        assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds
        if sets:
            assert {"HorizontalPodAutoscaler", "Ingress"} <= kinds
    # The checker is not a rubber stamp: a misspelt field fails it.
    broken = render(tools).replace("terminationGracePeriodSeconds", "terminationGracePeriod")
    refused = subprocess.run([str(tools / "k8s-check")], input=broken, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "terminationGracePeriod" in refused.stderr


def test_the_chart_gives_long_lived_streams_their_defaults(tools: Path) -> None:
    rendered = manifests(render(tools, *EVERYTHING))
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    herald = container(rendered)
    env = {item["name"]: item for item in herald["env"]}
    window = float(env["HERALD_DRAIN_WINDOW_SECONDS"]["value"])
    grace = float(env["HERALD_SHUTDOWN_GRACE_SECONDS"]["value"])
    # Kubernetes counts the grace period from the preStop hook: the drain, then the shutdown.
    assert pod["terminationGracePeriodSeconds"] >= window + grace + 10
    assert rendered["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert rendered["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert env["HERALD_BUS"]["value"] == "redis"
    assert env["HERALD_JWT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "herald-jwt"
    unknown = set(env) - setting_names() - CLI_ENV
    assert not unknown, f"not Herald settings: {unknown}"
    # The pod runs as the image's user.
    uid = re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert uid is not None
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    scale_down = rendered["HorizontalPodAutoscaler"]["spec"]["behavior"]["scaleDown"]
    assert scale_down["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": pod["terminationGracePeriodSeconds"]}
    ]
    annotations = rendered["Ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_the_charts_probes_hook_and_scaling_metric_work_on_a_real_node(tools: Path) -> None:
    rendered = manifests(render(tools, "drain.windowSeconds=1", "autoscaling.enabled=true"))
    herald = container(rendered)
    ready_path = herald["readinessProbe"]["httpGet"]["path"]
    live_path = herald["livenessProbe"]["httpGet"]["path"]
    assert herald["startupProbe"]["httpGet"]["path"] == live_path
    hook = herald["lifecycle"]["preStop"]["exec"]["command"]
    metric = rendered["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    env = {item["name"]: item.get("value", "") for item in herald["env"]}
    with running_gateway({"HERALD_DRAIN_WINDOW_SECONDS": env["HERALD_DRAIN_WINDOW_SECONDS"]}) as gateway:
        assert metric in metric_names(gateway)
        assert status(gateway, ready_path) == 200
        assert status(gateway, live_path) == 200
        # In the pod, Herald is PID 1 (the image's exec-form ENTRYPOINT); here it has its own.
        assert hook[:2] == ["/bin/sh", "-c"]
        assert "kill -USR1 1 " in hook[2]
        script = hook[2].replace("kill -USR1 1 ", f"kill -USR1 {gateway.process.pid} ")
        started = time.monotonic()
        ran = subprocess.run([*hook[:2], script], timeout=30)
        assert ran.returncode == 0
        assert time.monotonic() - started >= 1.0, "the hook holds the pod for the window"
        assert status(gateway, ready_path) == 503, "a draining pod leaves the Service"
        assert status(gateway, live_path) == 200, "and is not restarted for it"
        assert gateway.stop() == 0


# --- the container image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in dockerfile_instructions():
        if instruction == "ENV":
            for word in shlex.split(rest):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def exec_form(instruction: str) -> list[str]:
    (rest,) = [r for i, r in dockerfile_instructions() if i == instruction]
    if instruction == "HEALTHCHECK":
        rest = rest[rest.index("CMD ") + 4 :]
    parsed = yaml.safe_load(rest)
    assert isinstance(parsed, list), f"{instruction} is not in exec form"
    return [str(word) for word in parsed]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The build stage's ``pip install .``: the wheel of this checkout in a fresh environment."""
    where = tmp_path_factory.mktemp("image")
    subprocess.run(["uv", "build", "--wheel", "--out-dir", str(where / "dist"), "-q", str(ROOT)], check=True)
    (wheel,) = (where / "dist").glob("*.whl")
    subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(where / "venv")], check=True)
    python = where / "venv" / "bin" / "python"
    # As the image installs it: with the tracing extra.
    requirement = f"herald-gateway[tracing] @ {wheel.as_uri()}"
    subprocess.run(["uv", "pip", "install", "-q", "--python", str(python), requirement], check=True)
    return where / "venv" / "bin"


def test_the_image_runs_unprivileged_in_two_stages() -> None:
    instructions = dockerfile_instructions()
    stages = [rest for instruction, rest in instructions if instruction == "FROM"]
    assert len(stages) == 2
    assert stages[0].endswith(" AS build")
    final = instructions[[i for i, (name, _) in enumerate(instructions) if name == "FROM"][-1] :]
    users = [rest for name, rest in final if name == "USER"]
    assert users
    assert not users[-1].startswith(("0", "root"))
    assert any(name == "COPY" and rest.startswith("--from=build ") for name, rest in final)
    unknown = {name for name in image_env() if name.startswith("HERALD_")} - setting_names() - CLI_ENV
    assert not unknown, f"not Herald settings: {unknown}"


def test_the_images_command_starts_a_node_from_the_installed_wheel_and_its_healthcheck_tells(
    installed_wheel: Path,
) -> None:
    entrypoint, cmd, healthcheck = exec_form("ENTRYPOINT"), exec_form("CMD"), exec_form("HEALTHCHECK")
    exporter = "import opentelemetry.exporter.otlp.proto.http.trace_exporter"
    assert subprocess.run([str(installed_wheel / "python"), "-c", exporter]).returncode == 0, "can trace"
    assert entrypoint == ["herald"]
    assert healthcheck[0] == "herald"
    env = {**image_env(), "HERALD_HOST": "127.0.0.1", "HERALD_PORT": "0"}  # loopback only, here
    path = f"{installed_wheel}{os.pathsep}{os.environ['PATH']}"
    # The harness asks for --host/--port; the image's CMD says only "serve": its ENV does the rest.
    with running_gateway({**env, "PATH": path}, command=lambda _argv: [*entrypoint, *cmd]) as gateway:
        check_env = {**os.environ, "PATH": path, "HERALD_URL": gateway.url}
        # The installed package has the node's pages and its default mapping.
        assert status(gateway, "/admin") == 200
        assert httpx.get(f"{gateway.url}/", timeout=5).status_code == 200
        assert subprocess.run(healthcheck, env=check_env, timeout=30).returncode == 0
        answer = httpx.post(
            f"{gateway.url}/api/v1/admin/drain",
            json={"window_seconds": 5},
            headers={"authorization": f"Bearer {gateway.token('ops', admin=True)}"},
            timeout=5,
        )
        assert answer.status_code == 202
        assert subprocess.run(healthcheck, env=check_env, timeout=30).returncode == 0, (
            "a draining container is healthy: it is finishing its work"
        )
        assert subprocess.run([*healthcheck, "--ready"], env=check_env, timeout=30).returncode == 1
        gateway.stop()
        dead = subprocess.run(healthcheck, env=check_env, capture_output=True, text=True, timeout=30)
        assert dead.returncode == 1
        assert "cannot reach" in dead.stderr


# --- the systemd unit


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_finds_nothing_wrong_with_the_unit(tmp_path: Path) -> None:
    herald = Path(sys.executable).with_name("herald")
    unit = tmp_path / "herald.service"
    unit.write_text(UNIT.read_text().replace("/opt/herald/bin/herald", str(herald)))
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    # Unknown keys are only warned about: there must be none.
    assert verified.stderr.strip() == "", verified.stderr


async def test_the_units_stop_drains_the_node_before_its_sigterm_inside_the_timeout() -> None:
    unit = unit_settings()
    env = dict(value.split("=", 1) for value in unit["Environment"])
    window = float(env["HERALD_DRAIN_WINDOW_SECONDS"])
    grace = float(env["HERALD_SHUTDOWN_GRACE_SECONDS"])
    timeout = float(unit["TimeoutStopSec"][0])
    assert timeout >= window + grace + 10
    assert unit["KillMode"] == ["mixed"]
    assert unit["KillSignal"] == ["SIGTERM"]
    assert int(unit["LimitNOFILE"][0]) >= 20_000
    start = shlex.split(unit["ExecStart"][0])
    assert start[0] == "/opt/herald/bin/herald"
    start = [sys.executable, "-m", "herald", *start[1:]]
    start[start.index("--host") + 1] = "127.0.0.1"  # loopback only, here
    start[start.index("--port") + 1] = "0"
    short = {**env, "HERALD_DRAIN_WINDOW_SECONDS": "1"}  # what /etc/herald/herald.env may say
    with running_gateway(short, command=lambda _argv: start) as gateway:
        workers = int(start[start.index("--workers") + 1])
        assert len(gateway.listening["workers"]) == workers
        async with open_stream(gateway.url, token=gateway.token("alice")) as stream:
            assert (await stream.next()).event == "connection.established"
            stop = shlex.split(unit["ExecStop"][0])
            stop_env = {**os.environ, **short, "MAINPID": str(gateway.process.pid)}
            ran = await asyncio.create_subprocess_exec(*stop, env=stop_env)
            assert await asyncio.wait_for(ran.wait(), 30) == 0
            closing = await stream.next(timeout=10)
            assert closing.event == "connection.closing"
            assert closing.json()["reason"] == "drain"
        assert status(gateway, "/api/v1/events/health/ready") == 503
        gateway.process.send_signal(signal.SIGTERM)  # KillMode=mixed: the main process only
        code = gateway.process.wait(timeout - window)
        assert code == 0


def test_the_kits_are_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name in ("deploy/docker/Dockerfile", "deploy/helm/herald", "deploy/systemd/herald.service"):
        assert name in operations
