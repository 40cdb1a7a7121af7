"""The skeleton's names agree with the compiled object: every map, program and setting it resolves.

Opening an object needs libbpf.so.1 but no privilege; nothing is loaded into the kernel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import fields

import pytest

from retransmon.kernel import libbpf
from retransmon.kernel.plans import SENT_ITERATOR, TP_BTF_PROGRAMS, TRACEPOINT_PROGRAMS
from retransmon.kernel.skeleton import PROGRAM_LABELS, Maps, Rodata, object_path


@pytest.fixture(scope="module")
def obj() -> Iterator[libbpf.Object]:
    path = object_path()
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make bpf` to build the BPF object", pytrace=False)
    o = libbpf.Object(path)
    yield o
    o.close()


def test_every_map_resolves(obj: libbpf.Object) -> None:
    maps = Maps.resolve(obj)
    assert [f.name for f in fields(Maps)] == [getattr(maps, f.name).name for f in fields(Maps)]


def test_every_program_is_in_the_object_and_labelled(obj: libbpf.Object) -> None:
    known = {*TP_BTF_PROGRAMS, *TRACEPOINT_PROGRAMS, SENT_ITERATOR}
    assert {p.name for p in obj.programs()} == known == set(PROGRAM_LABELS)


def test_rodata_settings_exist(obj: libbpf.Object) -> None:
    btf = obj.btf()
    sec = btf.find(".rodata", libbpf.BTF_KIND_DATASEC)
    assert sec is not None
    settings = btf.datasec_vars(sec)
    assert {f.name for f in fields(Rodata)} <= set(settings)
