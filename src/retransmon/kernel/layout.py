"""How a C struct's fixed binary layout is described in Python (Field, Layout).

A :class:`Layout` lists a C struct's fields in order with their ``struct``
module codes; offsets are the running sums of sizes, so the C side must pad
explicitly (it does). The layouts themselves are in :mod:`retransmon.kernel.structs`;
``tests/unit/kernel/test_layout_btf.py`` compares each with the struct's BTF in the
compiled object, so the two cannot drift.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    name: str
    code: str  # struct module code, e.g. "Q", "H", "16s"

    @property
    def size(self) -> int:
        return struct.calcsize("=" + self.code)


class Layout:
    def __init__(self, c_name: str, fields: list[Field]) -> None:
        self.c_name = c_name
        self.fields = fields
        self.struct = struct.Struct("=" + "".join(f.code for f in fields))
        self.size = self.struct.size
        offsets: dict[str, int] = {}
        pos = 0
        for f in fields:
            offsets[f.name] = pos
            pos += f.size
        self.offsets = offsets

    def unpack(self, raw: bytes) -> tuple[Any, ...]:
        return self.struct.unpack_from(raw)

    def pack(self, *values: object) -> bytes:
        return self.struct.pack(*values)
