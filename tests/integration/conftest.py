"""Integration tests run as root against the real kernel: BPF, namespaces, nftables.

They are real tests, not optional ones: without root they fail, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.root)


@pytest.fixture(autouse=True)
def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (BPF programs, network namespaces): run them as root")


def bpf_link_ids() -> set[int]:
    """Ids of every BPF link in the kernel right now."""
    out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True, check=True).stdout
    return {int(link["id"]) for link in json.loads(out or "[]")}


def bpf_prog_ids(name_prefix: str) -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True).stdout
    return {int(p["id"]) for p in json.loads(out or "[]") if str(p.get("name", "")).startswith(name_prefix)}
