"""The shipped systemd unit and Kubernetes manifests grant exactly CAP_BPF and CAP_PERFMON."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from retransmon import __version__
from retransmon.attribution.labels import parse_labels
from retransmon.attribution.names import CONTAINERD_TASKS, STORAGE_DIRS

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "deploy" / "systemd" / "retransmon.service"
K8S = ROOT / "deploy" / "kubernetes"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def test_unit_grants_exactly_bpf_and_perfmon() -> None:
    s = _unit_settings()
    assert s["AmbientCapabilities"] == ["CAP_BPF CAP_PERFMON"]
    assert s["CapabilityBoundingSet"] == ["CAP_BPF CAP_PERFMON"]
    assert s["User"] == ["retransmon"] and s["Group"] == ["retransmon"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelTunables": "yes",
        "RestrictSUIDSGID": "yes",
    }.items():
        assert s[key] == [value], key
    assert "bpf" in s["SystemCallFilter"][0].split()
    assert s["ExecStart"][0].split()[1] == "serve"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (make setup does)"
    binary = os.path.join(os.path.dirname(sys.executable), "retransmon")
    unit = tmp_path / "retransmon.service"
    # verify checks that ExecStart exists: point it at this checkout's executable.
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/retransmon", binary))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Unknown keys and bad values are warnings on stderr, not a failing exit code.
    assert proc.stderr.strip() == "", proc.stderr


def _documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_daemonset_adds_only_bpf_and_perfmon() -> None:
    (ds,) = [d for d in _documents() if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert container["ports"][0]["containerPort"] == 2112
    assert ds["spec"]["selector"]["matchLabels"] == ds["spec"]["template"]["metadata"]["labels"]


def test_podmonitor_scrapes_the_daemonset() -> None:
    docs = _documents()
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (pm,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["spec"]["selector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"]
    port_names = {p["name"] for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= port_names
    assert pm["metadata"]["namespace"] == ds["metadata"]["namespace"]


def _daemonset_pod() -> dict[str, Any]:
    (ds,) = [d for d in _documents() if d["kind"] == "DaemonSet"]
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    return pod


def test_daemonset_runs_the_image_make_image_builds() -> None:
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "print-image: ; @echo $(IMAGE)", "print-image"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    (container,) = _daemonset_pod()["containers"]
    assert container["image"] == out.stdout.strip()
    assert container["image"].endswith(":" + __version__)


def test_daemonset_labels_series_with_containers_and_pods() -> None:
    (container,) = _daemonset_pod()["containers"]
    (labels_arg,) = [a for a in container["args"] if a.startswith("--labels=")]
    labels = parse_labels(labels_arg.removeprefix("--labels="))
    assert {"container_id", "pod_uid", "container", "pod", "namespace"} <= set(labels)


def test_daemonset_mounts_what_attribution_reads_read_only() -> None:
    pod = _daemonset_pod()
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    (container,) = pod["containers"]
    mounted = {m["name"]: m for m in container["volumeMounts"]}
    for name, path in host_paths.items():
        assert mounted[name]["readOnly"] is True, name
        assert mounted[name]["mountPath"] == path, "the name lookup reads the node's paths as they are"
    # The cgroup tree and every directory the name lookup reads bundles from.
    assert set(host_paths.values()) == {"/sys/fs/cgroup", "/" + CONTAINERD_TASKS, "/" + STORAGE_DIRS[0]}
