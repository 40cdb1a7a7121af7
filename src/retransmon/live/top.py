"""`retransmon top`: a live terminal view of the flows retransmitting the most.

On a terminal: a full-screen table (rich), redrawn every interval, keys
``r`` ``e`` ``t`` ``p`` ``o`` to sort by segments/s, events/s, total, peer and RTO timeouts, ``q`` to
quit. Fits 80 columns: addresses are shortened before anything else is.
When stdout is not a terminal: a plain text block every interval.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from retransmon import defaults
from retransmon.attribution.flows import cause_name
from retransmon.live.decode import DecodeError, Decoder
from retransmon.live.filter import EventFilter
from retransmon.live.stream import EventStream
from retransmon.live.topmodel import CAUSE_SHORT, FlowRow, TopModel
from retransmon.live.trace import endpoint

POLL_MS = 50
YIELD_EVERY = 4096  # records handled before a long poll returns to look at the keyboard
KEYS = {"r": "rate", "e": "events", "t": "total", "p": "peer", "o": "timeouts"}
SORT_TITLES = {
    "rate": "segments/s",
    "events": "events/s",
    "total": "total segments",
    "peer": "peer",
    "timeouts": "RTO timeouts",
}
HEADER_LINES = 5  # title, totals, blank, table header, and one spare


@dataclass
class TopOptions:
    interval: float = 2.0
    sort: str = "rate"
    rows: int = 20
    duration: float | None = None
    event_filter: EventFilter = field(default_factory=EventFilter)
    hooks: str = "auto"
    ring_buffer_bytes: int = defaults.RING_BUFFER_BYTES
    drop_capabilities: bool = False  # give up every capability once attached (the CLI: on)


def owner(row: FlowRow) -> str:
    if row.pid is None:
        return "-"
    return f"{row.pid}/{row.comm or '?'}"


def rate_text(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def summary_line(model: TopModel, interval: float) -> str:
    t = model.totals
    return (
        f"retransmits {rate_text(t.rate)} segs/s, {rate_text(t.event_rate)} events/s over {interval:g} s; "
        f"total {t.segments} segments, {t.events} events; lost {t.lost}; flows {len(model.flows)}"
    )


PLAIN_HEADER = (
    f"{'PEER':<25} {'LOCAL':<25} {'OWNER':<16} {'STATE':<11} {'CAUSE':<15} "
    f"{'SEGS/s':>7} {'EVT/s':>6} {'TOTAL':>8}"
)


def render_plain(model: TopModel, sort: str, rows: int, interval: float, now: float) -> str:
    """One periodic block of text for a non-terminal stdout."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    lines = [f"{stamp} {summary_line(model, interval)}", PLAIN_HEADER]
    for row in model.ranked(sort)[:rows]:
        peer = endpoint(row.ip_version, row.dst_ip, row.dst_port)
        local = endpoint(row.ip_version, row.src_ip, row.src_port)
        lines.append(
            f"{peer:<25} {local:<25} {owner(row)[:16]:<16} {row.state:<11} {row.cause or '-':<15} "
            f"{rate_text(row.rate):>7} {rate_text(row.event_rate):>6} {row.total_segments:>8}"
        )
    return "\n".join(lines) + "\n\n"


def fit(text: str, width: int) -> str:
    """*text* in *width* characters, cut at the front: the port and host part of an address stay."""
    return text if len(text) <= width else "\u2026" + text[len(text) - width + 1 :]


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    right: bool = False


NUMBER_COLUMNS = (Column("SEGS/s", 7, True), Column("EVT/s", 6, True), Column("TOTAL", 9, True))
WIDE = 110  # from this many columns on, the local end is shown in full, else only its port


def columns_for(width: int) -> list[Column]:
    """Column widths that fill *width* (at least 80): the peer column takes what is left."""
    local = Column("LOCAL", 25) if width >= WIDE else Column("LPORT", 5, True)
    fixed = [local, Column("OWNER", 14), Column("STATE", 11), Column("WHY", 4), *NUMBER_COLUMNS]
    used = sum(c.width for c in fixed) + len(fixed) + 1  # a space between columns, the last one free
    peer = Column("PEER", max(15, min(47, width - used)))
    return [peer, *fixed]


def _cells(row: FlowRow, local_full: bool) -> list[str]:
    local = endpoint(row.ip_version, row.src_ip, row.src_port) if local_full else str(row.src_port)
    return [
        endpoint(row.ip_version, row.dst_ip, row.dst_port),
        local,
        owner(row),
        row.state,
        CAUSE_SHORT.get(row.cause, row.cause),
        rate_text(row.rate),
        rate_text(row.event_rate),
        str(row.total_segments),
    ]


def table_lines(model: TopModel, sort: str, rows: int, width: int) -> tuple[str, list[str]]:
    """The header and rows of the flow table, each exactly as wide as the columns for *width*."""
    columns = columns_for(width)
    local_full = columns[1].title == "LOCAL"

    def line(cells: list[str]) -> str:
        return " ".join(
            fit(text, c.width).rjust(c.width) if c.right else fit(text, c.width).ljust(c.width)
            for text, c in zip(cells, columns, strict=True)
        )

    header = line([c.title for c in columns])
    return header, [line(_cells(row, local_full)) for row in model.ranked(sort)[:rows]]


def render_view(
    model: TopModel, sort: str, rows: int, interval: float, now: float, *, width: int = 80
) -> Group:
    """The full-screen view: title, totals, and the table of the worst flows.

    Cells are plain Text (never console markup: `[2001:db8::1]` is an address, `:1234:` no emoji).
    """
    title = Text.assemble(
        ("retransmon top", "bold"),
        f"  {time.strftime('%H:%M:%S', time.localtime(now))}  sorted by {SORT_TITLES[sort]}  ",
        ("r e t p o", "bold"),
        " sort  ",
        ("q", "bold"),
        " quit",
        no_wrap=True,
        overflow="ellipsis",
    )
    totals = Text(summary_line(model, interval), overflow="fold")
    if model.totals.lost:
        totals.stylize("bold red")
    header, body = table_lines(model, sort, rows, width)
    lines = [Text(header, style="reverse", no_wrap=True), *(Text(b, no_wrap=True) for b in body)]
    return Group(title, totals, Text(""), *lines)


@contextlib.contextmanager
def keyboard(stream: TextIO) -> Iterator[int | None]:
    """Single key presses from *stream* without Enter (cbreak mode); None if it is no terminal."""
    if not stream.isatty():
        yield None
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_key(fd: int | None) -> str | None:
    if fd is None or not select.select([fd], [], [], 0)[0]:
        return None
    data = os.read(fd, 32)
    return data.decode(errors="replace")[-1:] if data else None


class _Yield(Exception):
    """Raised from the record callback so that a long poll returns to the loop."""


class _Collector:
    def __init__(self, model: TopModel, event_filter: EventFilter) -> None:
        self.model = model
        self._decoder = Decoder(lambda flow: flow, event_filter.matches)
        self._since_yield = 0
        self.draining = False
        self.undecodable = 0

    def on_record(self, raw: bytes) -> None:
        try:
            decoded = self._decoder.decode(raw)
        except DecodeError:
            self.undecodable += 1  # not a retrans_event: a BPF object from another version
            return
        if decoded is not None:
            flow, _boot_ns, segments, reconciled, timing = decoded
            self.model.add(flow, segments, reconciled, cause_name(timing[0]))
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY and not self.draining:
            self._since_yield = 0
            raise _Yield


def run_top(options: TopOptions, stop: threading.Event, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    model = TopModel()
    collector = _Collector(model, options.event_filter)
    deadline = None if options.duration is None else time.monotonic() + options.duration
    interactive = out.isatty()
    console = Console(file=out) if interactive else None
    with (
        EventStream(
            collector.on_record, options.hooks, options.ring_buffer_bytes, options.drop_capabilities
        ) as stream,
        contextlib.ExitStack() as stack,
    ):
        live: Live | None = None
        fd: int | None = None
        if console is not None:
            fd = stack.enter_context(keyboard(sys.stdin))
            live = stack.enter_context(Live(console=console, screen=True, auto_refresh=False))
        sort = options.sort
        last_roll = time.monotonic()

        def draw(now_wall: float) -> None:
            if live is not None and console is not None:
                rows = max(1, console.size.height - HEADER_LINES)
                view = render_view(model, sort, rows, options.interval, now_wall, width=console.size.width)
                live.update(view, refresh=True)
            else:
                out.write(render_plain(model, sort, options.rows, options.interval, now_wall))
                out.flush()

        if live is not None:
            draw(time.time())
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            next_roll = last_roll + options.interval
            wait = min(POLL_MS, max(0, int((next_roll - now) * 1000)))
            with contextlib.suppress(_Yield):
                stream.poll(wait)
            key = read_key(fd)
            if key == "q":
                break
            if key in KEYS:
                sort = KEYS[key]
                draw(time.time())
            now = time.monotonic()
            if now >= next_roll:
                model.roll(now - last_roll)
                model.totals.lost = stream.lost()
                last_roll = now
                draw(time.time())
        collector.draining = True
        stream.stop()
