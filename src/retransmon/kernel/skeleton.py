"""The BPF program's lifecycle: open -> configure -> load -> attach -> close.

:class:`RetransmonBPF` picks the best hook set the kernel accepts, in order:

1. ``tp_btf`` with socket storage,
2. ``tp_btf`` counting per event (kernels without socket storage for tracing),
3. classic ``tracepoint/tcp/...`` counting per event (kernels refusing tp_btf).

Only 1 counts exactly under failed attempts and skipped runs, and only 1
counts segments sent (the retransmission rate's denominator): at close, and
for live sockets with an iterator over every process's open files that user
space runs before each harvest (:meth:`RetransmonBPF.collect_sent`). Closing
always destroys every link and the object, so the kernel keeps nothing: no
program, map or link is pinned.

Like a libbpf skeleton, this is the one place that knows the object's maps and
programs by name: they are resolved once, at load, into typed attributes
(:class:`Maps`, :class:`~retransmon.kernel.tables.FlowTables`); everything
else goes through those.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib import resources
from types import TracebackType

from retransmon import defaults
from retransmon.errors import EnvironmentProblem
from retransmon.kernel import capabilities, libbpf
from retransmon.kernel.features import KernelFeatures, probe
from retransmon.kernel.plans import SENT_ITERATOR, HookPlan, choose
from retransmon.kernel.structs import RUNTIME_SETTINGS, ZERO_U32
from retransmon.kernel.tables import FlowTables, TableFds

log = logging.getLogger(__name__)

OBJECT_ENV = "RETRANSMON_BPF_OBJECT"
COARSE_RESERVE = 4096  # table slots kept for coarse (folded) keys when flows overflow


# Short names for the retransmon_bpf_program_attached{program} label.
PROGRAM_LABELS = {
    "tp_btf_tcp_retransmit_skb": "tcp_retransmit_skb",
    "tp_btf_tcp_retransmit_synack": "tcp_retransmit_synack",
    "tp_btf_inet_sock_set_state": "inet_sock_set_state",
    "tp_btf_tcp_destroy_sock": "tcp_destroy_sock",
    "tracepoint_tcp_retransmit_skb": "tcp_retransmit_skb",
    "tracepoint_tcp_retransmit_synack": "tcp_retransmit_synack",
    SENT_ITERATOR: "sent_segments_iter",
}


def object_path() -> str:
    """The compiled BPF object: $RETRANSMON_BPF_OBJECT, else the one in the package."""
    override = os.environ.get(OBJECT_ENV)
    if override:
        return override
    path = str(resources.files("retransmon.kernel") / "retransmon.bpf.o")
    if not os.path.exists(path):
        raise EnvironmentProblem(
            f"the BPF object {path} has not been built",
            fix="run `make setup` (or `make bpf`) in the source tree",
        )
    return path


@dataclass
class ProgramOptions:
    hooks: str = defaults.HOOKS
    flow_capacity: int = defaults.FLOW_CAPACITY
    socket_capacity: int = defaults.SOCKET_CAPACITY
    count_flows: bool = True  # False: only per-event records (trace, top); the flow tables stay empty
    ring_buffer_bytes: int = 4096  # one page unless a reader wants events
    coarse_reserve: int = COARSE_RESERVE


@dataclass
class AttachedProgram:
    name: str
    label: str
    fd: int
    link: libbpf.Link | None


@dataclass(frozen=True)
class Maps:
    """Every map user space touches, by its name in bpf/retransmon.bpf.c, resolved once at open.

    The handles are the object's: valid until :meth:`RetransmonBPF.close`.
    """

    flow_tables: libbpf.Map  # one-slot array of maps: the flow table the programs write to
    flows_a: libbpf.Map
    flows_b: libbpf.Map
    listeners: libbpf.Map  # listening ports per network namespace
    sent_states: libbpf.Map  # per-socket baselines of segments sent
    events: libbpf.Map  # the ring buffer of struct retrans_event
    settings: libbpf.Map  # struct runtime_settings, one entry
    losses: libbpf.Map  # struct loss_counts per CPU

    @classmethod
    def resolve(cls, obj: libbpf.Object) -> Maps:
        return cls(**{f.name: obj.map(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Rodata:
    """The programs' ``const volatile`` settings, by their names in the C source; fixed at load."""

    has_err_arg: bool  # the tracepoint reports failed attempts (err argument)
    use_sk_storage: bool  # per-socket state: exact counting, segments sent
    has_sk_cgroup: bool  # sock_cgroup_data has a cgroup pointer
    flow_capacity: int  # flows per table before new ones fold into coarse keys
    count_flows: bool  # False: records only (trace, top)

    def write(self, obj: libbpf.Object) -> None:
        """Into the opened, not yet loaded, object's .rodata, where its BTF says each one is."""
        btf = obj.btf()
        sec = btf.find(".rodata", libbpf.BTF_KIND_DATASEC)
        if sec is None:
            raise libbpf.LibbpfError("BPF object has no .rodata", errno.ENOENT)
        layout = btf.datasec_vars(sec)
        for f in fields(self):
            offset, size = layout[f.name]
            obj.set_rodata(offset, int(getattr(self, f.name)).to_bytes(size, "little"))


@dataclass(frozen=True)
class KernelStatus:
    """The loaded programs' health, for the agent's own metrics."""

    hooks: str  # the hook plan in use, "none" when detached
    exact: bool
    attached: dict[str, bool]  # every program label, whether it is attached
    recursion_misses: dict[str, int]  # runs the kernel skipped, per program label
    flow_capacity: int


def _needs_privilege(err: int | None) -> bool:
    return err in (errno.EPERM, errno.EACCES)


class RetransmonBPF:
    """Loaded and attached BPF programs with their maps. Use as a context manager."""

    def __init__(self, options: ProgramOptions | None = None, features: KernelFeatures | None = None) -> None:
        self.options = options or ProgramOptions()
        self.features = features  # probed at start when not given (check has probed already)
        self.plan: HookPlan | None = None
        self.skipped: list[tuple[str, str]] = []  # (plan, reason) known in advance to be refused
        self.rejected: list[tuple[str, str]] = []  # (plan, reason) tried before the chosen one
        self.programs: list[AttachedProgram] = []
        self._obj: libbpf.Object | None = None
        self.maps: Maps | None = None
        self.tables: FlowTables | None = None
        self._sent_iterator: libbpf.Link | None = None

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> RetransmonBPF:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Open, configure, load and attach, trying hook plans from best to simplest.

        Plans the kernel is known to refuse (plans.choose) are not tried; a refusal of the
        others falls through to the next plan.
        """
        if self.features is None:
            self.features = probe()
        choice = choose(self.options.hooks, self.features)
        self.skipped = choice.skipped
        for name, why in choice.skipped:
            log.info("hook plan %s skipped: %s", name, why)
        path = object_path()
        last: libbpf.LibbpfError | None = None
        for plan in choice.plans:
            try:
                self._load(path, plan)
                self._attach(plan)
            except libbpf.LibbpfError as exc:
                self.close()
                if _needs_privilege(exc.errno) and not capabilities.has_bpf_privileges():
                    raise EnvironmentProblem(
                        f"not allowed to load BPF programs ({exc.strerror})", fix=capabilities.PRIVILEGE_FIX
                    ) from None
                reason = _explain(exc)
                log.info("hook plan %s not usable: %s", plan.name, reason)
                self.rejected.append((plan.name, reason))
                last = exc
                continue
            self.plan = plan
            log.info(
                "attached %s (%s counting)",
                ", ".join(p.label for p in self.programs),
                "exact" if plan.exact else "per-event",
            )
            return
        assert last is not None
        if _needs_privilege(last.errno):
            raise EnvironmentProblem(
                f"not allowed to load BPF programs ({last.strerror})", fix=capabilities.PRIVILEGE_FIX
            )
        raise EnvironmentProblem(
            "the kernel refused every way of loading retransmon's BPF programs: "
            + "; ".join(f"{name}: {why}" for name, why in self.rejected),
            fix="run `retransmon check` for what this kernel supports",
            details=last.log_tail[-30:],
        )

    def _load(self, path: str, plan: HookPlan) -> None:
        assert self.features is not None
        obj = libbpf.Object(path)
        self._obj = obj
        wanted = {*plan.programs, *plan.iterators}
        for prog in obj.programs():
            prog.set_autoload(prog.name in wanted)
        Rodata(
            has_err_arg=self.features.retransmit_has_err,
            use_sk_storage=plan.sk_storage,
            has_sk_cgroup=self.features.sk_cgroup_pointer,
            flow_capacity=self.options.flow_capacity,
            count_flows=self.options.count_flows,
        ).write(obj)
        maps = Maps.resolve(obj)
        size = self.options.flow_capacity + self.options.coarse_reserve + 1
        maps.flows_a.set_max_entries(size)
        maps.flows_b.set_max_entries(size)
        maps.sent_states.set_max_entries(self.options.socket_capacity)
        maps.events.set_max_entries(_ring_size(self.options.ring_buffer_bytes))
        obj.load()
        self.maps = maps
        fds = TableFds(
            outer=maps.flow_tables.fd,
            tables=(maps.flows_a.fd, maps.flows_b.fd),
            listeners=maps.listeners.fd,
            losses=maps.losses.fd,
        )
        self.tables = FlowTables(fds, size, self.collect_sent)
        self.tables.reset()

    def _attach(self, plan: HookPlan) -> None:
        assert self._obj is not None
        by_name = {prog.name: prog for prog in self._obj.programs()}  # resolved once
        for name in plan.programs:
            prog = by_name[name]
            link = prog.attach()
            self.programs.append(AttachedProgram(name, PROGRAM_LABELS[name], prog.fd, link))
        for name in plan.iterators:
            prog = by_name[name]
            link = prog.attach_iter()
            self.programs.append(AttachedProgram(name, PROGRAM_LABELS[name], prog.fd, link))
            if name == SENT_ITERATOR:
                self._sent_iterator = link
        if self._sent_iterator is not None:
            # After the hooks, so sockets born from now on take their baselines at birth:
            # the first run gives every older socket (any namespace) a baseline.
            self.collect_sent()

    def close(self) -> None:
        """Detach everything and free the object. Safe to call twice."""
        for p in self.programs:
            if p.link is not None:
                p.link.destroy()
                p.link = None
        self.programs = []
        self._sent_iterator = None
        self.tables = None
        self.maps = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    # -- access for harvest, trace and health ----------------------------------

    def collect_sent(self) -> bool:
        """Account live sockets' sent segments into the live flow table; False without the iterator."""
        if self._sent_iterator is None:
            return False
        self._sent_iterator.run_iterator()
        return True

    def maps_accessible(self) -> bool:
        """Whether this process can still read the flow tables (a probe after dropping capabilities)."""
        return self.tables is not None and self.tables.readable()

    def _loaded(self) -> Maps:
        if self.maps is None:
            raise ValueError("BPF object is not loaded")
        return self.maps

    def set_events_wanted(self, wanted: bool) -> None:
        """Switch the per-event ring buffer records on (a reader is attached) or off."""
        settings = RUNTIME_SETTINGS.pack(int(wanted), 0)
        libbpf.map_update(self._loaded().settings.fd, ZERO_U32, settings)

    def open_ring_buffer(self, on_record: Callable[[bytes], None]) -> libbpf.RingBuffer:
        """A reader of the ring buffer handing each record's bytes (struct retrans_event) to on_record."""
        return libbpf.RingBuffer(self._loaded().events.fd, on_record)

    def status(self) -> KernelStatus:
        attached = {p.label for p in self.programs}
        return KernelStatus(
            hooks=self.plan.name if self.plan else "none",
            exact=self.exact,
            attached={label: label in attached for label in sorted(set(PROGRAM_LABELS.values()))},
            recursion_misses=self.recursion_misses() if self.programs else {},
            flow_capacity=self.options.flow_capacity,
        )

    def recursion_misses(self) -> dict[str, int]:
        """Runs the kernel skipped, per program label (nested on the same CPU)."""
        out: dict[str, int] = {}
        for p in self.programs:
            info = libbpf.prog_info(p.fd)
            out[p.label] = out.get(p.label, 0) + info.recursion_misses
        return out

    def run_stats(self) -> dict[str, libbpf.ProgInfo]:
        return {p.label: libbpf.prog_info(p.fd) for p in self.programs}

    @property
    def exact(self) -> bool:
        return (
            self.plan is not None
            and self.plan.exact
            and any(p.name.startswith("tp_btf") for p in self.programs)
        )


def _ring_size(requested: int) -> int:
    """Ring buffers are a power-of-two number of pages."""
    page = os.sysconf("SC_PAGE_SIZE")
    size = page
    while size < requested:
        size *= 2
    return size


def _explain(exc: libbpf.LibbpfError) -> str:
    """The most telling line of libbpf's log for a failure, else the error itself.

    A verifier rejection names the program and the verifier's own last word
    (the line before its statistics), e.g. ``R2 type=untrusted_ptr_ expected=...``.
    """
    verifier = verifier_message(exc.log_tail)
    if verifier:
        return verifier
    for line in reversed(exc.log_tail):
        text = line.strip()
        if text and not text.startswith(("-- END", "processed ", "verification time", "stack depth")):
            if "permission error while running as root" in text:
                continue
            return f"{exc.what}: {text}"
    return str(exc.strerror)


_VERIFIER_STATS = ("processed ", "verification time", "stack depth", "-- END", "mark_read")


def verifier_message(log_tail: list[str]) -> str | None:
    """'the verifier refused PROG: REASON' from libbpf's log, if the log holds a verifier log."""
    end = None
    for i in range(len(log_tail) - 1, -1, -1):
        if "-- END PROG LOAD LOG --" in log_tail[i]:
            end = i
            break
    if end is None:
        return None
    prog = "a program"
    for line in log_tail[end:]:
        if "prog '" in line and "failed to load" in line:
            prog = line.split("prog '", 1)[1].split("'", 1)[0]
            break
    for line in reversed(log_tail[:end]):
        text = line.strip()
        if "-- BEGIN PROG LOAD LOG --" in text:
            break
        if text and not text.startswith(_VERIFIER_STATS):
            return f"the verifier refused {prog}: {text}"
    return None
