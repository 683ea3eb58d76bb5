"""The Kubernetes manifests (deploy/kubernetes) are valid objects that make valid Settings.

No cluster is available here: each object is checked against the Kubernetes API's own
schemas (``kubernetes-validate``, offline, strict: unknown fields fail), and every
container's environment is resolved as the kubelet would (Secret and ConfigMap keys,
the downward API, ``$(VAR)`` references) and handed to :class:`Settings`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from sietch.cli.main import app
from sietch.config import Settings

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
FILES = sorted(MANIFESTS.glob("*.yaml"))
# A Kubernetes of a year ago, and the newest the package knows.
VERSIONS = ["1.32", kubernetes_validate.utils.latest_version()]
# What the downward API would hand a pod (no traffic goes to either).
FIELDS = {"spec.nodeName": "worker-1", "status.podIP": "10.1.2.3"}
WORKLOADS = {"DaemonSet", "Deployment", "StatefulSet"}


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


OBJECTS = [obj for path in FILES for obj in load(path)]


def objects(kind: str) -> list[dict[str, Any]]:
    return [obj for obj in OBJECTS if obj["kind"] == kind]


def by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects(kind)}


def sietch_containers() -> list[tuple[str, dict[str, Any]]]:
    """(workload name, container) for every container that runs Sietch."""
    return [
        (obj["metadata"]["name"], container)
        for obj in OBJECTS
        if obj["kind"] in WORKLOADS
        for container in obj["spec"]["template"]["spec"]["containers"]
        if "sietch-start" in " ".join(container.get("command", []))
    ]


def key_value(source: dict[str, Any]) -> str:
    """The value an ``env[].valueFrom`` gives, read from the manifests' own objects."""
    if "fieldRef" in source:
        return FIELDS[source["fieldRef"]["fieldPath"]]
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return str(by_name("Secret")[ref["name"]]["stringData"][ref["key"]])
    ref = source["configMapKeyRef"]
    return str(by_name("ConfigMap")[ref["name"]]["data"][ref["key"]])


def resolve(env: list[dict[str, Any]]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: in order, ``$(NAME)`` expanded
    from the variables before it."""
    resolved: dict[str, str] = {}
    for var in env:
        if "valueFrom" in var:
            resolved[var["name"]] = key_value(var["valueFrom"])
        else:
            resolved[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: resolved.get(m[1], m[0]),
                var["value"],
            )
    return resolved


def test_there_are_manifests_for_every_part() -> None:
    """Nodes, gateways, their Service, the catalog and the shared Secret are all there."""
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in OBJECTS}
    assert {
        ("DaemonSet", "sietch-node"),
        ("Deployment", "sietch-gateway"),
        ("Service", "sietch"),
        ("StatefulSet", "sietch-catalog"),
        ("Service", "sietch-catalog"),
        ("Secret", "sietch-cluster"),
        ("ConfigMap", "sietch-start"),
        ("NetworkPolicy", "sietch-node-internal"),
    } <= kinds
    assert by_name("Deployment")["sietch-gateway"]["spec"]["replicas"] >= 2


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_manifest_is_valid_for_kubernetes(path: Path, version: str) -> None:
    """Every object in the file validates against that Kubernetes version's strict schema
    (a misspelt or misplaced field fails; so does a kind without a schema)."""
    docs = load(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_every_sietch_variable_is_a_setting() -> None:
    """Each ``SIETCH_*`` variable a container sets names a field of Settings."""
    names = {
        var["name"] for _, container in sietch_containers() for var in container.get("env", [])
    }
    sietch = {name for name in names if name.startswith("SIETCH_")}
    assert sietch
    unknown = {n for n in sietch if n.removeprefix("SIETCH_").lower() not in Settings.model_fields}
    assert not unknown, f"not settings: {sorted(unknown)}"


def settings_of(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container's server runs with: its environment, resolved from the
    manifests (and nothing of this process'), in the role its command starts."""
    env = resolve(container["env"])
    role = container["command"][-1]
    assert role in {"node", "gateway"}
    assert env["SIETCH_ROLE"] == role
    for name in [n for n in os.environ if n.startswith("SIETCH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(role=role)  # what ``sietch serve --node`` / ``--gateway`` set


@pytest.mark.parametrize(
    ("workload", "container"), sietch_containers(), ids=[n for n, _ in sietch_containers()]
)
def test_environment_makes_valid_settings(
    workload: str, container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container's environment, resolved from the manifests, is accepted by Settings in
    the role it starts (its catalog, cluster secret and node URL included)."""
    settings = settings_of(container, monkeypatch)
    role = settings.role
    if role == "node":
        assert settings.node_name == FIELDS["spec.nodeName"]
        assert settings.node_url == f"http://{FIELDS['status.podIP']}:{settings.internal_port}"
    assert settings.catalog_url == by_name("Secret")["sietch-cluster"]["stringData"]["catalog-url"]


def host_mounts(workload: str) -> dict[str, str]:
    """The workload's mounts of host paths: where in the container -> the host's path."""
    pods = next(o for o in OBJECTS if o["metadata"]["name"] == workload)["spec"]["template"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in pods["spec"]["volumes"] if "hostPath" in v}
    return {
        m["mountPath"]: volumes[m["name"]]
        for c in pods["spec"]["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] in volumes
    }


def test_nodes_are_privileged_with_kvm_and_their_dirs_on_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node's container is privileged, has the host's /dev/kvm, and keeps the state
    and cache dirs its Settings name on host paths (they outlive the pod); a gateway has
    no privilege and no host path. Both run a stock Debian image."""
    containers = dict(sietch_containers())
    node, gateway = containers["sietch-node"], containers["sietch-gateway"]
    assert node["securityContext"]["privileged"] is True
    mounts = host_mounts("sietch-node")
    assert mounts["/dev/kvm"] == "/dev/kvm"
    settings = settings_of(node, monkeypatch)
    for needed in (settings.state_dir, settings.cache_dir):
        assert str(needed) in mounts, f"{needed} is not on a host path"
    assert not gateway.get("securityContext", {}).get("privileged", False)
    assert host_mounts("sietch-gateway") == {}
    assert all(c["image"].startswith("debian:") for c in containers.values())


def test_catalog_url_uses_the_catalog_password() -> None:
    """The catalog URL in the Secret carries the password PostgreSQL is set up with, and
    names the catalog's Service and port."""
    secret = by_name("Secret")["sietch-cluster"]["stringData"]
    service = by_name("Service")["sietch-catalog"]
    port = service["spec"]["ports"][0]["port"]
    assert secret["catalog-url"] == (
        f"postgresql://sietch:{secret['catalog-password']}@sietch-catalog:{port}/sietch"
    )


def selected(labels: dict[str, str]) -> list[dict[str, Any]]:
    """The pod templates whose labels include ``labels``."""
    return [
        obj["spec"]["template"]
        for obj in OBJECTS
        if obj["kind"] in WORKLOADS
        and labels.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    ]


def port_names(pods: dict[str, Any]) -> set[str]:
    return {p["name"] for c in pods["spec"]["containers"] for p in c.get("ports", [])}


def test_services_select_pods_on_named_ports() -> None:
    """Each Service selects the pods of one workload, and its target port is one of theirs."""
    for service in objects("Service"):
        [pods] = selected(service["spec"]["selector"])
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names(pods), service["metadata"]["name"]


def test_network_policies_name_real_pods_and_ports() -> None:
    """Each NetworkPolicy guards one workload's named port and lets in pods that exist."""
    policies = objects("NetworkPolicy")
    assert policies
    for policy in policies:
        [pods] = selected(policy["spec"]["podSelector"]["matchLabels"])
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                assert len(selected(peer["podSelector"]["matchLabels"])) == 1
            for port in rule["ports"]:
                assert port["port"] in port_names(pods), policy["metadata"]["name"]


START_SCRIPT = by_name("ConfigMap")["sietch-start"]["data"]["start.sh"]


def test_start_script_is_valid_shell() -> None:
    """The ConfigMap's start script parses as POSIX shell (the stock image's /bin/sh)."""
    subprocess.run(["sh", "-n"], input=START_SCRIPT, text=True, check=True)


def test_start_script_runs_real_serve_options() -> None:
    """The ``sietch serve`` options the start script runs each role with exist."""
    serve = typer.main.get_command(app).commands["serve"]
    options = {opt for param in serve.params for opt in param.opts}
    used = re.findall(r"sietch serve (--[a-z-]+)", START_SCRIPT)
    assert sorted(used) == ["--gateway", "--node"]
    assert set(used) <= options
