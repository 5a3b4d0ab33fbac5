"""deploy/kubernetes/: schema-shaped checks (kubeconform needs schemas from the internet).

Each manifest has the fields its kind requires, the pieces reference each other consistently
(selectors, ports, ConfigMaps, Secrets) and the pod is hardened and probed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
REQUIRED_SPEC = {
    "Deployment": ("apps/v1", ["replicas", "selector", "template"]),
    "Service": ("v1", ["selector", "ports"]),
    "ServiceMonitor": ("monitoring.coreos.com/v1", ["selector", "endpoints"]),
    "PodDisruptionBudget": ("policy/v1", ["selector"]),
    "ConfigMap": ("v1", []),
    "Secret": ("v1", []),
    "NetworkPolicy": ("networking.k8s.io/v1", ["podSelector", "policyTypes", "ingress"]),
}


def _docs() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_every_file_is_listed_and_shaped() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    docs = _docs()
    assert set(docs) == set(REQUIRED_SPEC)
    for kind, doc in docs.items():
        api, spec_keys = REQUIRED_SPEC[kind]
        assert doc["apiVersion"] == api, kind
        assert doc["metadata"]["name"], kind
        assert "namespace" not in doc["metadata"], f"{kind}: the namespace is set by kustomize"
        for key in spec_keys:
            assert key in doc["spec"], f"{kind}: spec.{key} missing"


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
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["args"][:1] == ["run"] and "memory" in c["resources"]["limits"]


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
