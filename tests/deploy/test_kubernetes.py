"""deploy/kubernetes/: rendered like kustomize, validated against the Kubernetes schemas, and shaped right.

``kubectl apply -k deploy/kubernetes`` applies ``base/`` (plain Kubernetes: Namespace, ConfigMap,
Secret, Deployment, Service, PodDisruptionBudget, NetworkPolicy); ``prometheus-operator/`` adds the
ServiceMonitor component (issue 21: the base failed on clusters without the Operator's CRD).
Built-in kinds are validated offline against the OpenAPI schemas that ``kubernetes-validate`` ships
(test extra), for the oldest and newest Kubernetes it knows; the ServiceMonitor (a CRD) is checked
by shape. Where ``kubectl`` is installed, its own kustomize renders the same objects.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAY = K8S / "prometheus-operator"
COMPONENT = K8S / "components" / "servicemonitor"
REQUIRED_SPEC = {
    "Deployment": ("apps/v1", ["replicas", "selector", "template"]),
    "Service": ("v1", ["selector", "ports"]),
    "ServiceMonitor": ("monitoring.coreos.com/v1", ["selector", "endpoints"]),
    "PodDisruptionBudget": ("policy/v1", ["selector"]),
    "ConfigMap": ("v1", []),
    "Secret": ("v1", []),
    "Namespace": ("v1", []),
    "NetworkPolicy": ("networking.k8s.io/v1", ["podSelector", "policyTypes", "ingress"]),
}
BUILT_IN_GROUPS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1"}
CLUSTER_SCOPED = {"Namespace"}


def _render(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization the way kustomize does for what ours use (resources, components, namespace)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        docs += _render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for entry in k.get("components", []):
        docs += _render((directory / entry).resolve())
    if k.get("namespace"):
        for doc in docs:
            if doc["kind"] in CLUSTER_SCOPED:
                if doc["kind"] == "Namespace":
                    doc["metadata"]["name"] = k["namespace"]
            else:
                doc["metadata"]["namespace"] = k["namespace"]
    return docs


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in out, f"two {doc['kind']} objects"
        out[doc["kind"]] = doc
    return out


def _docs() -> dict[str, dict[str, Any]]:
    return _by_kind(_render(OVERLAY))


def test_layout_every_file_is_listed_and_shaped() -> None:
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    files = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(base["resources"]) == files
    assert yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"] == ["base"]
    component = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert component["kind"] == "Component" and component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert set(component["resources"]) == {p.name for p in COMPONENT.glob("*.yaml")} - {"kustomization.yaml"}
    docs = _docs()
    assert set(docs) == set(REQUIRED_SPEC)
    for kind, doc in docs.items():
        api, spec_keys = REQUIRED_SPEC[kind]
        assert doc["apiVersion"] == api, kind
        assert doc["metadata"]["name"], kind
        for key in spec_keys:
            assert key in doc["spec"], f"{kind}: spec.{key} missing"
    for name in files | {"servicemonitor.yaml"}:
        folder = COMPONENT if name == "servicemonitor.yaml" else K8S / "base"
        for doc in yaml.safe_load_all((folder / name).read_text()):
            if doc["kind"] != "Namespace":
                assert "namespace" not in doc["metadata"], f"{name}: the namespace is set by kustomize"


def test_base_applies_without_the_prometheus_operator() -> None:
    """Issue 21: the base held a ServiceMonitor, which fails where its CRD is not installed."""
    base = _render(K8S)
    assert {d["apiVersion"] for d in base} <= BUILT_IN_GROUPS
    assert "ServiceMonitor" not in {d["kind"] for d in base}
    overlay = _render(OVERLAY)
    assert {d["kind"] for d in overlay} - {d["kind"] for d in base} == {"ServiceMonitor"}
    ns = _by_kind(base)["Namespace"]["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == ns for d in overlay if d["kind"] != "Namespace")


@pytest.mark.parametrize("directory", [K8S, OVERLAY], ids=["base", "prometheus-operator"])
def test_kubectl_kustomize_renders_the_same(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: its kustomize is not compared (the shape checks still run)")
    proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    rendered = sorted((d for d in yaml.safe_load_all(proc.stdout) if d), key=key)
    assert rendered == sorted(_render(directory), key=key)


@pytest.mark.parametrize("version", ["1.25.0", "1.37.0"])
def test_built_in_objects_match_the_kubernetes_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (test extra) has the schemas")
    docs = [d for d in _render(OVERLAY) if d["apiVersion"] in BUILT_IN_GROUPS]
    assert len(docs) == len(REQUIRED_SPEC) - 1
    for doc in docs:
        kv.validate(doc, version, strict=True)  # raises ValidationError on unknown or mistyped fields
    broken = dict(_docs()["Deployment"], spec={**_docs()["Deployment"]["spec"], "replica": 1})
    with pytest.raises(kv.ValidationError):  # the check bites: a misspelt field fails
        kv.validate(broken, version, strict=True)


def test_namespace_enforces_the_restricted_pod_security_profile() -> None:
    docs = _docs()
    labels = docs["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    # what the restricted profile requires of every pod and container
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all(
        set(v) & {"configMap", "emptyDir", "secret", "projected", "persistentVolumeClaim"}
        for v in pod["volumes"]
    )
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    cm = yaml.safe_load(docs["ConfigMap"]["data"]["watcher.yaml"])
    assert f".{docs['Namespace']['metadata']['name']}.svc" in cm["external_url"]


def test_references_are_consistent() -> None:
    docs = _docs()
    dep = docs["Deployment"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"] == pod_labels
    for kind in ("Service", "PodDisruptionBudget", "ServiceMonitor"):
        spec = docs[kind]["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= pod_labels.items(), kind
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in docs["Service"]["spec"]["ports"]} <= ports
    svc_ports = {p["name"] for p in docs["Service"]["spec"]["ports"]}
    assert {e["port"] for e in docs["ServiceMonitor"]["spec"]["endpoints"]} <= svc_ports
    assert docs["ServiceMonitor"]["metadata"]["namespace"] == docs["Service"]["metadata"]["namespace"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert volumes["rules"]["configMap"]["name"] == "watcher-rules"  # created from git, see kustomization
    assert "create configmap watcher-rules --from-file=rules/" in (K8S / "kustomization.yaml").read_text()
    assert container["envFrom"][0]["secretRef"]["name"] == docs["Secret"]["metadata"]["name"]


def test_pod_is_hardened_and_probed() -> None:
    pod = _docs()["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER (deploy/docker/Dockerfile)
    assert "USER 10001:10001" in (K8S.parent / "docker" / "Dockerfile").read_text()
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert (
        c["args"] == ["run", "--config", "/etc/watcher/watcher.yaml"] and "memory" in c["resources"]["limits"]
    )
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/var/lib/watcher", "/tmp"} <= mounts  # writable with a read-only root filesystem


@pytest.mark.parametrize("key", ["watcher.yaml"])
def test_configmap_settings_load(key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from watcher.config import load_settings

    cfg = tmp_path / key
    cfg.write_text(_docs()["ConfigMap"]["data"][key])
    monkeypatch.setenv("WATCHER_STORE__URL", _docs()["Secret"]["stringData"]["WATCHER_STORE__URL"])
    settings = load_settings(cfg)
    assert settings.server.host == "0.0.0.0" and settings.rules == [Path("/etc/watcher/rules")]


def test_replica_id_is_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from watcher.config import Settings

    (c,) = _docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    entry = env["WATCHER_CLUSTER__REPLICA_ID"]
    assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    monkeypatch.setenv(entry["name"], "watcher-7d9c-abcde")  # what the kubelet would inject
    assert Settings().cluster.replica_id == "watcher-7d9c-abcde"


def test_network_policy_admits_only_prometheus_and_ingest_clients() -> None:
    docs = _docs()
    policy = docs["NetworkPolicy"]["spec"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert {p["port"] for p in rule["ports"]} <= {p["name"] for p in container["ports"]}
    peers = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    assert peers == [{"app.kubernetes.io/name": "prometheus"}, {"watcher.example/ingest-client": "true"}]
    assert all("ipBlock" not in peer for peer in rule["from"])  # no CIDR opens it to everyone


def test_secret_example_sets_every_token_scope() -> None:
    data = _docs()["Secret"]["stringData"]
    for scope in ("INGEST", "ADMIN", "READ"):
        assert data[f"WATCHER_SERVER__{scope}_TOKEN"].startswith("CHANGE-ME")
