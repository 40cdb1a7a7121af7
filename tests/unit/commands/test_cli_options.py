"""`serve` options added for cardinality control: --series-ttl durations, the --labels list."""

from __future__ import annotations

import pytest

from retransmon.attribution.labels import LABEL_NAMES
from retransmon.cli import build_parser, main


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("off", None),
        ("0", None),
    ],
)
def test_series_ttl_durations(text: str, seconds: float | None) -> None:
    assert build_parser().parse_args(["serve", "--series-ttl", text]).series_ttl == seconds


def test_series_ttl_is_off_by_default() -> None:
    assert build_parser().parse_args(["serve"]).series_ttl is None


@pytest.mark.parametrize("text", ["abc", "-5m", "10x", "nan", "inf", ""])
def test_bad_series_ttl_is_one_line_and_exit_2(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--series-ttl", text]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--series-ttl" in err[0]


def test_labels_help_lists_every_label(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps the list anywhere
    assert ",".join(LABEL_NAMES) in text
