"""Argument types and options more than one subcommand takes."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from retransmon import defaults

LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_SECONDS = 86400.0  # a day: longer intervals are a typo, and overflow Event.wait()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most {MAX_SECONDS:g}, got {text}")
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float | None:
    """Seconds, or a number with s/m/h/d; 0 or 'off' turns the feature off (None)."""
    raw = text.strip().lower()
    if raw == "off":
        return None
    scale = _DURATION_UNITS.get(raw[-1:], 0)
    number = raw[:-1] if scale else raw
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s, 15m, 2h or off, got {text!r}"
        ) from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive duration or off, got {text!r}")
    return value or None


def percent(text: str) -> float:
    raw = text.strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage like 5 or 0.5%, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text}")
    return value


def milliseconds(text: str) -> float:
    raw = text.strip().lower().removesuffix("ms")
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds like 50 or 50ms, got {text!r}") from None
    if not 0 <= value <= 10000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 10000 ms, got {text}")
    return value


def ring_buffer_kib(text: str) -> int:
    value = positive_int(text)
    if value > defaults.MAX_RING_BUFFER_KIB:
        raise argparse.ArgumentTypeError(f"at most {defaults.MAX_RING_BUFFER_KIB} KiB, got {value}")
    return value


def add_common(p: argparse.ArgumentParser, log_level: str = "info") -> None:
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, default=log_level, help=f"log verbosity (default: {log_level})"
    )
    p.add_argument(
        "--hooks",
        choices=defaults.HOOK_MODES,
        default=defaults.HOOKS,
        help="which kernel hooks to use: auto picks tp_btf where the kernel has it (default: auto)",
    )


def add_ring_buffer_option(p: argparse.ArgumentParser) -> None:
    kib = defaults.RING_BUFFER_BYTES // 1024
    p.add_argument(
        "--ring-buffer-kib",
        type=ring_buffer_kib,
        default=kib,
        metavar="KIB",
        help="ring buffer size, rounded up to a power of two pages; records that do not fit are "
        f"counted as lost (default {kib})",
    )


def add_drop_capabilities_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--drop-capabilities",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give up every capability once the BPF programs are attached (default: on)",
    )


def add_live_options(p: argparse.ArgumentParser) -> None:
    """What trace and top share: filters, ring buffer size, capabilities, hooks, quiet logging."""
    from retransmon.live.filter import add_filter_options

    add_filter_options(p)
    add_ring_buffer_option(p)
    add_drop_capabilities_option(p)
    add_common(p, log_level="warning")


def stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM set the returned event (Ctrl-C ends trace and top normally)."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
