"""Thin typed binding to the system's libbpf (Debian's libbpf1, ``libbpf.so.1``).

With capabilities.py, the only code that touches ctypes (nothing outside the
kernel package imports it). Everything it hands out is plain
Python: ints, bytes, strings and small dataclasses. Functions raise
:class:`LibbpfError` (an ``OSError`` with the errno libbpf returned) on failure.
libbpf's own log goes to the ``retransmon.libbpf`` logger; the most recent
lines are kept so that a failed load can show the verifier's explanation.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from retransmon.errors import EnvironmentProblem

log = logging.getLogger("retransmon.libbpf")

# ----------------------------------------------------------------------------
# Loading the library
# ----------------------------------------------------------------------------

_c_void_p = ctypes.c_void_p
_c_int = ctypes.c_int
_c_uint32 = ctypes.c_uint32
_c_char_p = ctypes.c_char_p
_c_size_t = ctypes.c_size_t

_PRINT_FN = ctypes.CFUNCTYPE(_c_int, _c_int, _c_char_p, _c_void_p)
_SAMPLE_FN = ctypes.CFUNCTYPE(_c_int, _c_void_p, _c_void_p, _c_size_t)

# (name, restype, argtypes)
_SIGNATURES: list[tuple[str, Any, list[Any]]] = [
    ("libbpf_set_print", _c_void_p, [_PRINT_FN]),
    ("libbpf_major_version", _c_uint32, []),
    ("libbpf_minor_version", _c_uint32, []),
    ("bpf_object__open_file", _c_void_p, [_c_char_p, _c_void_p]),
    ("bpf_object__load", _c_int, [_c_void_p]),
    ("bpf_object__close", None, [_c_void_p]),
    ("bpf_object__btf", _c_void_p, [_c_void_p]),
    ("bpf_object__find_map_by_name", _c_void_p, [_c_void_p, _c_char_p]),
    ("bpf_object__find_program_by_name", _c_void_p, [_c_void_p, _c_char_p]),
    ("bpf_object__next_program", _c_void_p, [_c_void_p, _c_void_p]),
    ("bpf_program__name", _c_char_p, [_c_void_p]),
    ("bpf_program__section_name", _c_char_p, [_c_void_p]),
    ("bpf_program__set_autoload", _c_int, [_c_void_p, ctypes.c_bool]),
    ("bpf_program__fd", _c_int, [_c_void_p]),
    ("bpf_program__attach", _c_void_p, [_c_void_p]),
    ("bpf_program__attach_iter", _c_void_p, [_c_void_p, _c_void_p]),
    ("bpf_iter_create", _c_int, [_c_int]),
    ("bpf_link__destroy", _c_int, [_c_void_p]),
    ("bpf_link__fd", _c_int, [_c_void_p]),
    ("bpf_map__fd", _c_int, [_c_void_p]),
    ("bpf_map__max_entries", _c_uint32, [_c_void_p]),
    ("bpf_map__set_max_entries", _c_int, [_c_void_p, _c_uint32]),
    ("bpf_map__initial_value", _c_void_p, [_c_void_p, ctypes.POINTER(_c_size_t)]),
    ("bpf_map_update_elem", _c_int, [_c_int, _c_void_p, _c_void_p, ctypes.c_uint64]),
    ("bpf_map_lookup_elem", _c_int, [_c_int, _c_void_p, _c_void_p]),
    ("bpf_map_delete_elem", _c_int, [_c_int, _c_void_p]),
    ("bpf_map_get_next_key", _c_int, [_c_int, _c_void_p, _c_void_p]),
    (
        "bpf_map_lookup_and_delete_batch",
        _c_int,
        [_c_int, _c_void_p, _c_void_p, _c_void_p, _c_void_p, ctypes.POINTER(_c_uint32), _c_void_p],
    ),
    ("bpf_prog_load", _c_int, [_c_int, _c_char_p, _c_char_p, _c_char_p, _c_size_t, _c_void_p]),
    ("bpf_obj_get_info_by_fd", _c_int, [_c_int, _c_void_p, ctypes.POINTER(_c_uint32)]),
    ("bpf_enable_stats", _c_int, [_c_int]),
    ("ring_buffer__new", _c_void_p, [_c_int, _SAMPLE_FN, _c_void_p, _c_void_p]),
    ("ring_buffer__poll", _c_int, [_c_void_p, _c_int]),
    ("ring_buffer__consume", _c_int, [_c_void_p]),
    ("ring_buffer__free", None, [_c_void_p]),
    ("libbpf_num_possible_cpus", _c_int, []),
    ("btf__parse_elf", _c_void_p, [_c_char_p, _c_void_p]),
    ("btf__load_vmlinux_btf", _c_void_p, []),
    ("btf__free", None, [_c_void_p]),
    ("btf__find_by_name_kind", ctypes.c_int32, [_c_void_p, _c_char_p, _c_uint32]),
    ("btf__type_by_id", _c_void_p, [_c_void_p, _c_uint32]),
    ("btf__name_by_offset", _c_char_p, [_c_void_p, _c_uint32]),
    ("btf__type_cnt", _c_uint32, [_c_void_p]),
]

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _open_library()
            _install_print_callback(_lib)
        return _lib


def _open_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise EnvironmentProblem(
                f"libbpf is not installed ({exc})",
                fix="install it: apt-get install libbpf1",
            ) from None
    for fname, restype, argtypes in _SIGNATURES:
        func = getattr(lib, fname, None)
        if func is None:
            continue  # optional in old releases; callers check has()
        func.restype = restype
        func.argtypes = argtypes
    return lib


def has(symbol: str) -> bool:
    """Whether the installed libbpf exports *symbol*."""
    return hasattr(_library(), symbol)


def version() -> str:
    lib = _library()
    if not hasattr(lib, "libbpf_major_version"):
        return "unknown"
    return f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}"


class LibbpfError(OSError):
    """A libbpf call failed; ``errno`` says why, ``log_tail`` holds libbpf's last words."""

    def __init__(self, what: str, err: int, log_tail: list[str] | None = None) -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what
        self.log_tail = log_tail or []


def _check_int(what: str, ret: int) -> int:
    if ret < 0:
        # libbpf 1.x returns -errno from every int-returning call.
        raise LibbpfError(what, -ret, recent_log())
    return ret


def _check_ptr(what: str, ptr: int | None) -> int:
    if not ptr:
        raise LibbpfError(what, ctypes.get_errno() or errno.EINVAL, recent_log())
    return ptr


# ----------------------------------------------------------------------------
# libbpf's log
# ----------------------------------------------------------------------------

_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_recent: collections.deque[str] = collections.deque(maxlen=400)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [_c_char_p, _c_size_t, _c_char_p, _c_void_p]
_libc.vsnprintf.restype = _c_int


def _print_text(level: int, fmt: bytes | None, args: int | None) -> int:
    buf = ctypes.create_string_buffer(4096)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace").rstrip("\n")
    for line in text.splitlines():
        _recent.append(line)
        log.log(_LEVELS.get(level, logging.DEBUG), "%s", line)
    return 0


_print_callback = _PRINT_FN(_print_text)


def _install_print_callback(lib: ctypes.CDLL) -> None:
    lib.libbpf_set_print(_print_callback)


def recent_log() -> list[str]:
    return list(_recent)


def clear_recent_log() -> None:
    _recent.clear()


# ----------------------------------------------------------------------------
# Objects, programs, maps, links
# ----------------------------------------------------------------------------


class Object:
    """A BPF ELF object: open -> configure -> load. Close releases everything."""

    def __init__(self, path: str) -> None:
        lib = _library()
        clear_recent_log()
        self._lib = lib
        self._ptr: int | None = _check_ptr(f"open {path}", lib.bpf_object__open_file(path.encode(), None))

    def _obj(self) -> int:
        if self._ptr is None:
            raise ValueError("BPF object is closed")
        return self._ptr

    def program(self, name: str) -> Program:
        ptr = self._lib.bpf_object__find_program_by_name(self._obj(), name.encode())
        return Program(self._lib, _check_ptr(f"find program {name}", ptr))

    def programs(self) -> Iterator[Program]:
        ptr = self._lib.bpf_object__next_program(self._obj(), None)
        while ptr:
            yield Program(self._lib, ptr)
            ptr = self._lib.bpf_object__next_program(self._obj(), ptr)

    def map(self, name: str) -> Map:
        ptr = self._lib.bpf_object__find_map_by_name(self._obj(), name.encode())
        return Map(self._lib, _check_ptr(f"find map {name}", ptr), name)

    def set_rodata(self, offset: int, data: bytes) -> None:
        """Write *data* into the object's .rodata before load (const volatile globals)."""
        m = self.map(".rodata")
        size = _c_size_t(0)
        ptr = _check_ptr("rodata", self._lib.bpf_map__initial_value(m.ptr, ctypes.byref(size)))
        if offset < 0 or offset + len(data) > size.value:
            raise ValueError(f"rodata write at {offset}+{len(data)} outside {size.value} bytes")
        ctypes.memmove(ptr + offset, data, len(data))

    def btf(self) -> Btf:
        """The object's own BTF (owned by the object: do not use after close)."""
        return Btf(_check_ptr("object BTF", self._lib.bpf_object__btf(self._obj())), owned=False)

    def load(self) -> None:
        clear_recent_log()
        _check_int("load BPF object", self._lib.bpf_object__load(self._obj()))

    def close(self) -> None:
        if self._ptr is not None:
            self._lib.bpf_object__close(self._ptr)
            self._ptr = None


class Program:
    def __init__(self, lib: ctypes.CDLL, ptr: int) -> None:
        self._lib = lib
        self.ptr = ptr

    @property
    def name(self) -> str:
        return (self._lib.bpf_program__name(self.ptr) or b"").decode()

    @property
    def section(self) -> str:
        return (self._lib.bpf_program__section_name(self.ptr) or b"").decode()

    def set_autoload(self, autoload: bool) -> None:
        _check_int(f"autoload {self.name}", self._lib.bpf_program__set_autoload(self.ptr, autoload))

    @property
    def fd(self) -> int:
        return int(self._lib.bpf_program__fd(self.ptr))

    def attach(self) -> Link:
        clear_recent_log()
        ptr = self._lib.bpf_program__attach(self.ptr)
        return Link(self._lib, _check_ptr(f"attach {self.name}", ptr))

    def attach_iter(self) -> Link:
        """Attach an iterator program (``SEC("iter/...")``) that needs no target (tasks, files)."""
        clear_recent_log()
        ptr = self._lib.bpf_program__attach_iter(self.ptr, None)
        return Link(self._lib, _check_ptr(f"attach iterator {self.name}", ptr))


class Link:
    def __init__(self, lib: ctypes.CDLL, ptr: int) -> None:
        self._lib = lib
        self._ptr: int | None = ptr

    @property
    def fd(self) -> int:
        return int(self._lib.bpf_link__fd(self._ptr)) if self._ptr else -1

    def destroy(self) -> None:
        if self._ptr is not None:
            self._lib.bpf_link__destroy(self._ptr)
            self._ptr = None

    def run_iterator(self) -> bytes:
        """Run an iterator link once over all its objects; returns what the program printed."""
        fd = _check_int("create iterator", self._lib.bpf_iter_create(self.fd))
        chunks: list[bytes] = []
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    # EAGAIN: a million objects visited without output; the next read resumes.
                    continue
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)


class Map:
    def __init__(self, lib: ctypes.CDLL, ptr: int, name: str) -> None:
        self._lib = lib
        self.ptr = ptr
        self.name = name

    @property
    def fd(self) -> int:
        return int(_check_int(f"fd of map {self.name}", self._lib.bpf_map__fd(self.ptr)))

    @property
    def max_entries(self) -> int:
        return int(self._lib.bpf_map__max_entries(self.ptr))

    def set_max_entries(self, n: int) -> None:
        _check_int(f"resize map {self.name}", self._lib.bpf_map__set_max_entries(self.ptr, n))


# ----------------------------------------------------------------------------
# Map element operations (on file descriptors)
# ----------------------------------------------------------------------------

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    _check_int("map update", _library().bpf_map_update_elem(fd, key, value, flags))


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    buf = ctypes.create_string_buffer(value_size)
    ret = _library().bpf_map_lookup_elem(fd, key, buf)
    if ret < 0:
        if -ret == errno.ENOENT or ctypes.get_errno() == errno.ENOENT:
            return None
        _check_int("map lookup", ret)
    return buf.raw


def num_possible_cpus() -> int:
    return _check_int("possible CPUs", _library().libbpf_num_possible_cpus())


def map_lookup_percpu(fd: int, key: bytes, value_size: int) -> list[bytes] | None:
    """One value per possible CPU (each padded to 8 bytes, as the kernel copies them)."""
    stride = (value_size + 7) & ~7
    ncpus = num_possible_cpus()
    raw = map_lookup(fd, key, stride * ncpus)
    if raw is None:
        return None
    return [raw[i * stride : i * stride + value_size] for i in range(ncpus)]


def map_delete(fd: int, key: bytes) -> bool:
    ret = _library().bpf_map_delete_elem(fd, key)
    if ret < 0:
        if -ret == errno.ENOENT:
            return False
        _check_int("map delete", ret)
    return True


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """All keys of a map, by get_next_key (callers must tolerate concurrent changes)."""
    lib = _library()
    keys: list[bytes] = []
    cur: ctypes.Array[ctypes.c_char] | None = None
    nxt = ctypes.create_string_buffer(key_size)
    while True:
        ret = lib.bpf_map_get_next_key(fd, cur, nxt)
        if ret < 0:
            if -ret == errno.ENOENT:
                return keys
            _check_int("map get_next_key", ret)
        keys.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)


def map_lookup_and_delete_batch(
    fd: int, key_size: int, value_size: int, max_entries: int
) -> list[tuple[bytes, bytes]]:
    """Read and delete every element. Raises LibbpfError(EINVAL/ENOTSUP) where unsupported."""
    lib = _library()
    chunk = max(1, min(max_entries, 4096))
    keys = ctypes.create_string_buffer(key_size * chunk)
    values = ctypes.create_string_buffer(value_size * chunk)
    in_batch = ctypes.create_string_buffer(max(key_size, 8))
    out_batch = ctypes.create_string_buffer(max(key_size, 8))
    out: list[tuple[bytes, bytes]] = []
    first = True
    while True:
        count = _c_uint32(chunk)
        ret = lib.bpf_map_lookup_and_delete_batch(
            fd, None if first else in_batch, out_batch, keys, values, ctypes.byref(count), None
        )
        err = -ret if ret < 0 else 0
        if err and err != errno.ENOENT:
            raise LibbpfError("map lookup_and_delete_batch", err, recent_log())
        kraw, vraw = keys.raw, values.raw
        for i in range(count.value):
            out.append((kraw[i * key_size : (i + 1) * key_size], vraw[i * value_size : (i + 1) * value_size]))
        if err == errno.ENOENT:
            return out
        ctypes.memmove(in_batch, out_batch, len(out_batch))
        first = False


# ----------------------------------------------------------------------------
# Raw programs (feature probes)
# ----------------------------------------------------------------------------

BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_INSN_SIZE = 8  # struct bpf_insn


def prog_load_errno(prog_type: int, insns: bytes) -> int:
    """Load raw instructions and close the program at once: 0 if the kernel accepted them, else the errno."""
    if len(insns) % BPF_INSN_SIZE:
        raise ValueError(f"BPF instructions are {BPF_INSN_SIZE} bytes each, got {len(insns)} bytes")
    ret: int = _library().bpf_prog_load(prog_type, None, b"GPL", insns, len(insns) // BPF_INSN_SIZE, None)
    if ret < 0:
        return -ret
    os.close(ret)
    return 0


# ----------------------------------------------------------------------------
# Program info and statistics
# ----------------------------------------------------------------------------

_PROG_INFO_SIZE = 232  # struct bpf_prog_info as of Linux 6.1 UAPI
_OFF_ID = 4
_OFF_NAME = 64
_OFF_RUN_TIME_NS = 192
_OFF_RUN_CNT = 200
_OFF_RECURSION_MISSES = 208


@dataclass(frozen=True)
class ProgInfo:
    id: int
    name: str
    run_time_ns: int
    run_cnt: int
    recursion_misses: int


def prog_info(fd: int) -> ProgInfo:
    buf = ctypes.create_string_buffer(_PROG_INFO_SIZE)
    size = _c_uint32(_PROG_INFO_SIZE)
    _check_int("program info", _library().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size)))
    raw = buf.raw

    def u64(off: int) -> int:
        # Fields the running kernel does not know stay zero.
        return int.from_bytes(raw[off : off + 8], "little") if off + 8 <= size.value else 0

    return ProgInfo(
        id=int.from_bytes(raw[_OFF_ID : _OFF_ID + 4], "little"),
        name=raw[_OFF_NAME : _OFF_NAME + 16].split(b"\0", 1)[0].decode(errors="replace"),
        run_time_ns=u64(_OFF_RUN_TIME_NS),
        run_cnt=u64(_OFF_RUN_CNT),
        recursion_misses=u64(_OFF_RECURSION_MISSES),
    )


BPF_STATS_RUN_TIME = 0


def enable_run_time_stats() -> int:
    """Turn on run_time_ns/run_cnt accounting while the returned fd stays open."""
    ret: int = _library().bpf_enable_stats(BPF_STATS_RUN_TIME)
    return _check_int("enable BPF stats", ret)


# ----------------------------------------------------------------------------
# Ring buffer
# ----------------------------------------------------------------------------


class RingBuffer:
    """Consume records from a BPF ring buffer map; *callback* gets each record's bytes."""

    def __init__(self, map_fd: int, callback: Callable[[bytes], None]) -> None:
        self._lib = _library()
        self._callback = callback
        self._error: BaseException | None = None

        def sample(_ctx: int | None, data: int | None, size: int) -> int:
            try:
                self._callback(ctypes.string_at(data or 0, size))
            except BaseException as exc:  # stop polling; re-raised in poll()
                self._error = exc
                return -1
            return 0

        self._sample = _SAMPLE_FN(sample)  # keep a reference: libbpf holds the pointer
        self._ptr: int | None = _check_ptr(
            "ring buffer", self._lib.ring_buffer__new(map_fd, self._sample, None, None)
        )

    def poll(self, timeout_ms: int) -> int:
        if self._ptr is None:
            raise ValueError("ring buffer is closed")
        ret: int = self._lib.ring_buffer__poll(self._ptr, timeout_ms)
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
        if ret < 0 and -ret != errno.EINTR:
            _check_int("ring buffer poll", ret)
        return max(ret, 0)

    def close(self) -> None:
        if self._ptr is not None:
            self._lib.ring_buffer__free(self._ptr)
            self._ptr = None


# ----------------------------------------------------------------------------
# BTF
# ----------------------------------------------------------------------------

BTF_KIND_INT = 1
BTF_KIND_PTR = 2
BTF_KIND_ARRAY = 3
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
BTF_KIND_ENUM = 6
BTF_KIND_TYPEDEF = 8
BTF_KIND_FUNC = 12
BTF_KIND_FUNC_PROTO = 13
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15


@dataclass(frozen=True)
class BtfMember:
    name: str
    type_id: int
    bit_offset: int


@dataclass(frozen=True)
class BtfType:
    id: int
    kind: int
    name: str
    size_or_type: int
    vlen: int


class Btf:
    """Read-only access to BTF: from an ELF object, the running kernel, or a loaded object."""

    def __init__(self, ptr: int, owned: bool = True) -> None:
        self._lib = _library()
        self._ptr: int | None = ptr
        self._owned = owned

    @classmethod
    def from_elf(cls, path: str) -> Btf:
        return cls(_check_ptr(f"BTF of {path}", _library().btf__parse_elf(path.encode(), None)))

    @classmethod
    def vmlinux(cls) -> Btf:
        return cls(_check_ptr("kernel BTF", _library().btf__load_vmlinux_btf()))

    def close(self) -> None:
        if self._ptr is not None and self._owned:
            self._lib.btf__free(self._ptr)
        self._ptr = None

    def __enter__(self) -> Btf:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _btf(self) -> int:
        if self._ptr is None:
            raise ValueError("BTF is closed")
        return self._ptr

    def find(self, name: str, kind: int) -> int | None:
        ret = self._lib.btf__find_by_name_kind(self._btf(), name.encode(), kind)
        return int(ret) if ret > 0 else None

    def _raw(self, type_id: int) -> tuple[int, int]:
        ptr = _check_ptr(f"BTF type {type_id}", self._lib.btf__type_by_id(self._btf(), type_id))
        return ptr, ctypes.c_uint32.from_address(ptr + 4).value

    def type(self, type_id: int) -> BtfType:
        ptr, info = self._raw(type_id)
        name_off = ctypes.c_uint32.from_address(ptr).value
        return BtfType(
            id=type_id,
            kind=(info >> 24) & 0x1F,
            name=(self._lib.btf__name_by_offset(self._btf(), name_off) or b"").decode(),
            size_or_type=ctypes.c_uint32.from_address(ptr + 8).value,
            vlen=info & 0xFFFF,
        )

    def members(self, type_id: int) -> list[BtfMember]:
        """Members of a struct or union (bit offsets; bitfield sizes are dropped)."""
        ptr, info = self._raw(type_id)
        kflag = info >> 31
        out = []
        for i in range(info & 0xFFFF):
            base = ptr + 12 + 12 * i
            name_off, type_, offset = (ctypes.c_uint32.from_address(base + 4 * j).value for j in range(3))
            bit_offset = offset & 0xFFFFFF if kflag else offset
            name = (self._lib.btf__name_by_offset(self._btf(), name_off) or b"").decode()
            out.append(BtfMember(name, type_, bit_offset))
        return out

    def enumerators(self, type_id: int) -> list[str]:
        """Names of an ENUM's values (btf_enum: name offset, value)."""
        ptr, info = self._raw(type_id)
        names = []
        for i in range(info & 0xFFFF):
            name_off = ctypes.c_uint32.from_address(ptr + 12 + 8 * i).value
            names.append((self._lib.btf__name_by_offset(self._btf(), name_off) or b"").decode())
        return names

    def int_signed(self, type_id: int) -> bool:
        """Whether a BTF_KIND_INT is signed (BTF_INT_SIGNED in its encoding)."""
        ptr, _info = self._raw(type_id)
        return bool((ctypes.c_uint32.from_address(ptr + 12).value >> 24) & 0x1)

    def array(self, type_id: int) -> tuple[int, int]:
        """(element type id, element count) of a BTF_KIND_ARRAY."""
        ptr, _info = self._raw(type_id)
        # struct btf_array {type, index_type, nelems} follows struct btf_type.
        return ctypes.c_uint32.from_address(ptr + 12).value, ctypes.c_uint32.from_address(ptr + 20).value

    def params(self, proto_id: int) -> list[int]:
        """Parameter type ids of a FUNC_PROTO."""
        ptr, info = self._raw(proto_id)
        return [ctypes.c_uint32.from_address(ptr + 12 + 8 * i + 4).value for i in range(info & 0xFFFF)]

    def datasec_vars(self, sec_id: int) -> dict[str, tuple[int, int]]:
        """Variables of a DATASEC: name -> (offset, size)."""
        ptr, info = self._raw(sec_id)
        out = {}
        for i in range(info & 0xFFFF):
            base = ptr + 12 + 12 * i
            var_id, offset, size = (ctypes.c_uint32.from_address(base + 4 * j).value for j in range(3))
            out[self.type(var_id).name] = (offset, size)
        return out

    def resolve(self, type_id: int) -> BtfType:
        """Follow typedefs and modifiers (const, volatile, restrict, type tags)."""
        t = self.type(type_id)
        while t.kind in (BTF_KIND_TYPEDEF, 9, 10, 11, 18):
            t = self.type(t.size_or_type)
        return t
