"""The web config read as Go's yaml.v2 reads it into typed fields."""

from __future__ import annotations

import pytest

from retransmon.export import goyaml
from retransmon.export.goyaml import Problem


def test_strings_keep_the_text_written() -> None:
    doc = goyaml.load("a: 1\nb: 1.10\nc: yes\nd: '007'\ne: ~\nf: 0x10\n")
    assert [goyaml.string(doc[k], k) for k in "abcdef"] == ["1", "1.10", "yes", "007", "", "0x10"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("y", True), ("ON", True), ("no", False), ("Off", False), ("~", None), ("", None)],
)
def test_booleans_as_yaml_v2(text: str, value: bool | None) -> None:
    assert goyaml.boolean(goyaml.load(f"k: {text}\n")["k"], "k", default=None) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["'true'", '"y"', "1", "maybe", "[true]"])
def test_not_booleans(text: str) -> None:
    with pytest.raises(Problem, match="true or false"):
        goyaml.boolean(goyaml.load(f"k: {text}\n")["k"], "k", default=True)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("1m30s", 90.0), ("250ms", 0.25), ("1.5h", 5400.0), ("0", 0.0), ("-2s", -2.0),
     ("3", 3e-9), ("1us", 1e-6), ("1µs", 1e-6), ("2h45m", 9900.0)],
)  # fmt: skip
def test_durations_as_go(text: str, seconds: float) -> None:
    assert goyaml.duration(goyaml.load(f"k: {text}\n")["k"], "k") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["s", "1d", "1 s", "'1'", ".s", "1.5.5s", "''"])
def test_not_durations(text: str) -> None:
    with pytest.raises(Problem, match="not a duration"):
        goyaml.duration(goyaml.load(f"k: {text}\n")["k"], "k")


def test_duplicate_keys_are_an_error_and_only_the_first_document_counts() -> None:
    with pytest.raises(Problem, match="given twice"):
        goyaml.load("a: 1\nb: 2\na: 3\n")
    assert goyaml.load("a: 1\n---\nb: 2\n") == {"a": "1"}
    assert goyaml.load("") is None


def test_yaml_errors_name_the_line() -> None:
    with pytest.raises(Problem, match="YAML error at line 3"):
        goyaml.load("a: 1\nb: [unclosed\n")
