"""The Prometheus files `chaos --prometheus` loads: package data, one copy shared with deploy/."""

from __future__ import annotations

from pathlib import Path

import pytest

from retransmon.chaos import prometheus
from retransmon.errors import EnvironmentProblem
from tests.deploy_files import PROMETHEUS_DIR

ASSETS = Path(prometheus.__file__).parent / prometheus.ASSETS


@pytest.mark.parametrize("name", ["prometheus.yml", "rules.yml"])
def test_deploy_links_to_the_one_packaged_copy(name: str) -> None:
    deployed = PROMETHEUS_DIR / name
    assert deployed.is_symlink()
    assert deployed.resolve() == (ASSETS / name).resolve()
    assert prometheus.shipped_file(name) == deployed.read_text()


def test_a_missing_asset_is_an_environment_problem() -> None:
    with pytest.raises(EnvironmentProblem, match=r"nope\.yml is missing") as info:
        prometheus.shipped_file("nope.yml")
    assert "reinstall" in info.value.render()
