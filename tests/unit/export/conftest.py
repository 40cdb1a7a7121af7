"""Fixtures the export tests share: throw-away TLS material and a registry with one known sample."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.support.tls import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("test_requests", "Requests handled.", registry=reg).inc(7)
    return reg
