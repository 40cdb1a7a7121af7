"""The image `make image` builds, run as the DaemonSet runs it, and container names end to end.

The agent runs in a podman container holding only CAP_BPF and CAP_PERFMON under the shipped
seccomp profile, with a read-only root, the host's cgroup tree and podman's container state
mounted read-only. Its counts are checked against RetransSegs in a test namespace, once for a
sender on the host and once for a sender in a podman container inside that namespace, whose
series must carry its container name, pod and namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from retransmon.attribution.cgroups import cgroup2_mount
from retransmon.chaos.netns import read_while_settled
from retransmon.chaos.testbed import TestBed
from tests.support import free_port, parse_metrics, total
from tests.support.agent import Sample, http_get
from tests.support.podman import AGENT_FLAGS, REPO, RUN_FLAGS, Container, container_name, image_name, podman

pytestmark = pytest.mark.image

SEGMENTS = "tcp_retransmitted_segments_total"
LABELS = "netns,kind,container_id,pod_uid,container,pod,namespace"
# What the name lookup reads for podman (and CRI-O): bundles and containers.json.
STORAGE = ("/var/lib/containers/storage/overlay-containers", "/run/containers/storage/overlay-containers")


@dataclass(frozen=True)
class Agent:
    container: Container
    url: str
    started_in: float  # seconds from `podman run` to the first answer on /metrics

    def scrape(self) -> list[Sample]:
        status, _ctype, body = http_get(self.url + "/metrics")
        assert status == 200, body[:200]
        return parse_metrics(body)


@pytest.fixture(scope="module")
def image() -> str:
    started = time.monotonic()
    made = subprocess.run(["make", "-s", "image"], cwd=REPO, capture_output=True, text=True)
    assert made.returncode == 0, (made.stdout + made.stderr)[-2000:]
    name = image_name()
    size = int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout)
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", name).stdout)
    print(f"make image: {time.monotonic() - started:.1f} s, {name} {size / 1e6:.0f} MB, labels {labels}")
    return name


def test_make_image_again_gives_the_same_image(image: str) -> None:
    """Reproducible: the same commit and base give the same image id (and the wheel the same bytes)."""
    before = podman("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    wheel = sorted((REPO / "dist").glob("*.whl"))[0].read_bytes()
    made = subprocess.run(["make", "-s", "image"], cwd=REPO, capture_output=True, text=True)
    assert made.returncode == 0, (made.stdout + made.stderr)[-2000:]
    assert "(cached)" in made.stdout
    assert podman("image", "inspect", "--format", "{{.Id}}", image).stdout.strip() == before
    assert sorted((REPO / "dist").glob("*.whl"))[0].read_bytes() == wheel


def test_image_has_the_version_label_and_no_compiler(image: str) -> None:
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout)
    assert image.endswith(":" + labels["org.opencontainers.image.version"])
    found = podman(
        "run", "--rm", "--name", container_name("tools"), *RUN_FLAGS, "--entrypoint", "/bin/sh", image, "-c",
        "for t in clang gcc cc llc bpftool make apt-get pip; do command -v $t; done; retransmon --version",
    ).stdout.split()  # fmt: skip
    assert found == ["/usr/bin/apt-get", "retransmon", labels["org.opencontainers.image.version"]]


@pytest.fixture(scope="module")
def agent(image: str) -> Iterator[Agent]:
    cgroup = cgroup2_mount()
    assert cgroup is not None, "these tests need cgroup v2 (alone or hybrid)"
    port = free_port()
    mounts = [f"--volume={cgroup}:{cgroup}:ro"]
    mounts += [f"--volume={d}:{d}:ro" for d in STORAGE if os.path.isdir(d)]
    started = time.monotonic()
    container = Container(
        image,
        ["serve", "--listen", f"127.0.0.1:{port}", "--labels", LABELS, "--harvest-interval", "1"],
        name=container_name("agent"),
        flags=[*AGENT_FLAGS, "--network", "host", *mounts],
    )
    with container:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_get(url + "/metrics", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert container.running() and time.monotonic() < deadline, container.logs()
            time.sleep(0.05)
        started_in = time.monotonic() - started
        print(f"agent container answered /metrics {started_in:.2f} s after podman run")
        yield Agent(container, url, started_in)
        logs = container.logs()
    assert "Traceback" not in logs, logs


def test_agent_in_the_container_counts_exactly(agent: Agent) -> None:
    with TestBed(loss_percent=10) as tb:
        netns = str(tb.client.inode)
        kernel_before, samples = read_while_settled(tb.client, agent.scrape)
        ours_before = total(samples, SEGMENTS, netns=netns)
        tb.send(flows=4, duration=3)
        kernel_after, samples = read_while_settled(tb.client, agent.scrape)
        kernel, ours = kernel_after - kernel_before, total(samples, SEGMENTS, netns=netns) - ours_before
        print(f"image agent, host sender: RetransSegs {kernel}, exported {ours:.0f}")
        assert kernel > 100
        assert ours == kernel
    assert total(samples, "retransmon_bpf_program_attached") == 5


def test_sender_in_a_podman_container_is_named(agent: Agent, image: str) -> None:
    pod, namespace = "web-0", "shop"
    name = f"web-{os.getpid()}"
    with TestBed(loss_percent=10) as tb:
        netns = str(tb.client.inode)
        kernel_before, samples = read_while_settled(tb.client, agent.scrape)
        ours_before = total(samples, SEGMENTS, netns=netns)
        send = (
            f"python3 -m retransmon.chaos.traffic send --host {tb.server_ip} --port {tb.port} "
            "--flows 2 --duration 3 --json && echo SENT && exec sleep 300"
        )
        # The container stays up after sending: its cgroup (and so its id) must outlive the scrape.
        with Container(
            image,
            ["-c", send],
            name=name,
            flags=[
                "--network", f"ns:/run/netns/{tb.client.name}", "--entrypoint", "/bin/sh",
                "--annotation", f"io.kubernetes.pod.name={pod}",
                "--annotation", f"io.kubernetes.pod.namespace={namespace}",
            ],
        ) as sender:  # fmt: skip
            logs = sender.wait_for_log("SENT", timeout=60)
            assert int(json.loads(logs.splitlines()[0])["bytes_sent"]) > 0
            kernel_after, samples = read_while_settled(tb.client, agent.scrape)
        kernel, ours = kernel_after - kernel_before, total(samples, SEGMENTS, netns=netns) - ours_before
        mine = [s for s in samples if s.name == SEGMENTS and s.labels["netns"] == netns and s.value > 0]
        named = total(mine, SEGMENTS, container=name, pod=pod, namespace=namespace, container_id=sender.id)
        print(f"podman sender {name}: RetransSegs {kernel}, exported {ours:.0f}, with its names {named:.0f}")
        print("series:", sorted({tuple(sorted(s.labels.items())) for s in mine}))
        assert kernel > 100
        assert ours == kernel
        assert named == kernel  # every retransmitted segment in that namespace is the container's


def test_image_runs_as_an_unprivileged_user_with_the_two_capabilities(image: str) -> None:
    """Nothing in the image needs UID 0: podman gives an added capability to a non-root user."""
    result = podman(
        "run", "--rm", "--name", container_name("nobody"), *RUN_FLAGS, *AGENT_FLAGS,
        "--user", "65534:65534", image, "check", check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uid 65534, capabilities: CAP_BPF, CAP_PERFMON" in result.stdout
    assert "counting exact" in result.stdout
