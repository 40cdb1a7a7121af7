"""The Python mirrors of bpf/retransmon.h match the BTF of the compiled object, field by field.

Needs libbpf.so.1 (to parse BTF) but not root: nothing is loaded into the kernel.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from retransmon.kernel import libbpf, structs
from retransmon.kernel.layout import Field, Layout
from retransmon.kernel.structs import FLOW_KEY

SRC = Path(__file__).resolve().parents[3] / "src" / "retransmon"
OBJECT = str(SRC / "kernel" / "retransmon.bpf.o")

REQUIRED = {"flow_key", "flow_counts", "listen_key", "loss_counts", "retrans_event", "runtime_settings"}


def _layouts() -> dict[str, Layout]:
    found: dict[str, Layout] = {}
    for value in vars(structs).values():
        if isinstance(value, Layout):
            assert value.c_name not in found, f"two layouts for struct {value.c_name}"
            found[value.c_name] = value
    return found


LAYOUTS = _layouts()


@dataclass(frozen=True)
class CMember:
    name: str
    offset: int  # bytes
    size: int  # bytes
    kind: str  # "int" or "array"
    signed: bool  # for ints
    elem_size: int  # for arrays


@dataclass(frozen=True)
class CStruct:
    name: str
    size: int
    members: list[CMember]


def _size_of(btf: libbpf.Btf, type_id: int) -> tuple[int, str, bool, int]:
    """(size, kind, signed, element size) of a member's type."""
    t = btf.resolve(type_id)
    if t.kind == libbpf.BTF_KIND_INT:
        return t.size_or_type, "int", btf.int_signed(t.id), t.size_or_type
    if t.kind == libbpf.BTF_KIND_ARRAY:
        elem_type, nelems = btf.array(t.id)
        elem_size, _, _, _ = _size_of(btf, elem_type)
        return elem_size * nelems, "array", False, elem_size
    if t.kind in (libbpf.BTF_KIND_STRUCT, libbpf.BTF_KIND_UNION):
        return t.size_or_type, "struct", False, t.size_or_type
    raise AssertionError(f"unexpected BTF kind {t.kind} for type {type_id}")


def _open_btf(path: str) -> libbpf.Btf:
    """The object's BTF; a missing object fails (never skips) with the command that builds it."""
    path = os.path.normpath(path)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make bpf` to build the BPF object", pytrace=False)
    return libbpf.Btf.from_elf(path)


@pytest.fixture(scope="module")
def btf() -> Iterator[libbpf.Btf]:
    with _open_btf(OBJECT) as b:
        yield b


def _struct(btf: libbpf.Btf, name: str) -> CStruct:
    sid = btf.find(name, libbpf.BTF_KIND_STRUCT)
    assert sid is not None, f"struct {name} is not in the BTF of the BPF object (is it used by a map?)"
    t = btf.type(sid)
    members = []
    for m in btf.members(sid):
        assert m.bit_offset % 8 == 0, f"{name}.{m.name} is a bitfield"
        size, kind, signed, elem = _size_of(btf, m.type_id)
        members.append(CMember(m.name, m.bit_offset // 8, size, kind, signed, elem))
    return CStruct(name, t.size_or_type, members)


def test_required_layouts_are_found() -> None:
    assert set(LAYOUTS) >= REQUIRED


def test_struct_mirrors_live_in_one_module() -> None:
    # Every Layout of a C struct is in kernel/structs.py; layout.py defines the class.
    elsewhere = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name not in ("structs.py", "layout.py") and re.search(r"\bLayout\(", path.read_text())
    ]
    assert elsewhere == []


def test_object_missing_fails_with_make_hint(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"missing: run `make bpf`"):
        _open_btf(str(tmp_path / "retransmon.bpf.o"))


def _mismatches(layout: Layout, c: CStruct) -> list[str]:
    """Every way *layout* disagrees with the C struct *c* (empty when they match)."""
    problems: list[str] = []
    c_names = [m.name for m in c.members]
    py_names = [f.name for f in layout.fields]
    if c_names != py_names:
        problems.append(f"struct {c.name} fields {c_names}, Python layout {py_names}")
    if layout.size != c.size:
        problems.append(f"sizeof(struct {c.name}) is {c.size}, the Python layout's {layout.size}")
    by_name = {f.name: f for f in layout.fields}
    for member in c.members:
        where = f"{c.name}.{member.name}"
        field = by_name.get(member.name)
        if field is None:
            continue
        if layout.offsets[field.name] != member.offset:
            problems.append(f"offset of {where}: C {member.offset}, Python {layout.offsets[field.name]}")
        if field.size != member.size:
            problems.append(f"size of {where}: C {member.size}, Python {field.size}")
        if member.kind == "int":
            if field.code not in ("b", "B", "h", "H", "i", "I", "q", "Q"):
                problems.append(f"{where}: C integer, Python code {field.code!r}")
            elif field.code.islower() != member.signed:
                problems.append(f"signedness of {where}")
        elif not field.code.endswith("s"):
            problems.append(f"{where}: C {member.kind}, Python code {field.code!r} (want 'Ns')")
    return problems


@pytest.mark.parametrize("c_name", sorted(LAYOUTS))
def test_layout_matches_btf(btf: libbpf.Btf, c_name: str) -> None:
    assert _mismatches(LAYOUTS[c_name], _struct(btf, c_name)) == []


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ([Field("events", "Q")], "fields"),  # a field missing
        ([Field("segments", "Q"), Field("events", "Q")], "fields"),  # out of order
        ([Field("events", "Q"), Field("segments", "Q"), Field("extra", "I")], "sizeof"),
        ([Field("events", "I"), Field("segments", "Q")], "size of flow_counts.events"),
        ([Field("events", "q"), Field("segments", "Q")], "signedness"),
        ([Field("events", "8s"), Field("segments", "Q")], "integer"),
    ],
)
def test_mismatches_are_caught(btf: libbpf.Btf, fields: list[Field], needle: str) -> None:
    problems = _mismatches(Layout("flow_counts", fields), _struct(btf, "flow_counts"))
    assert any(needle in p for p in problems), problems


def test_array_mismatch_is_caught(btf: libbpf.Btf) -> None:
    fields = [Field(f.name, "4s") if f.name == "laddr" else f for f in FLOW_KEY.fields]
    problems = _mismatches(Layout("flow_key", fields), _struct(btf, "flow_key"))
    assert "size of flow_key.laddr: C 16, Python 4" in problems
    assert any(p.startswith("offset of flow_key.raddr") for p in problems)


@pytest.mark.parametrize("c_name", sorted(LAYOUTS))
def test_c_struct_has_no_implicit_padding(btf: libbpf.Btf, c_name: str) -> None:
    # Python offsets are running sums: the C side must pad explicitly.
    c = _struct(btf, c_name)
    end = 0
    for m in c.members:
        assert m.offset == end, f"hole before {c_name}.{m.name}"
        end = m.offset + m.size
    assert end == c.size, f"tail padding in struct {c_name}"


def test_flow_key_known_offsets(btf: libbpf.Btf) -> None:
    c = _struct(btf, "flow_key")
    assert {m.name: m.offset for m in c.members} == {
        "cgroup": 0,
        "netns": 8,
        "family": 12,
        "state": 14,
        "kind": 15,
        "lport": 16,
        "rport": 18,
        "flags": 20,
        "cause": 21,
        "pad": 22,
        "laddr": 24,
        "raddr": 40,
    }
    assert c.size == 56


def test_retrans_event_known_offsets(btf: libbpf.Btf) -> None:
    c = _struct(btf, "retrans_event")
    assert {m.name: m.offset for m in c.members} == {
        "ts_ns": 0,
        "cgroup": 8,
        "netns": 16,
        "pid": 20,
        "segments": 24,
        "family": 28,
        "state": 30,
        "kind": 31,
        "lport": 32,
        "rport": 34,
        "flags": 36,
        "cause": 37,
        "backoff": 38,
        "pad": 39,
        "srtt_us": 40,
        "rto_ms": 44,
        "comm": 48,
        "laddr": 64,
        "raddr": 80,
    }
    assert c.size == 96


def test_layout_helpers() -> None:
    layout = Layout("t", [Field("a", "Q"), Field("b", "H"), Field("c", "3s"), Field("d", "B")])
    assert layout.offsets == {"a": 0, "b": 8, "c": 10, "d": 13}
    assert layout.size == 14
    raw = layout.pack(1, 2, b"xyz", 4)
    assert raw == (1).to_bytes(8, "little") + (2).to_bytes(2, "little") + b"xyz" + b"\x04"
    assert layout.unpack(raw) == (1, 2, b"xyz", 4)
