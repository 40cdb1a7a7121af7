"""Bulk and churn TCP traffic: a sink that discards, a sender that pushes, both run in namespaces.

    python -m retransmon.chaos.traffic sink --bind ADDR --port P [--ready-file F]
    python -m retransmon.chaos.traffic send --host H --port P --flows N --duration S
        [--bytes B] [--connections C] [--json]
    python -m retransmon.chaos.traffic hold --host H --port P [--count N] [--hold S] [--json]

`send` bulk mode: N parallel connections, each sending 256 KiB buffers for S seconds
(or until B bytes each), then a clean close (shutdown, read to EOF) so all data is
acknowledged. Churn mode (`--connections C`): C short connections, N at a time, each
from a fresh ephemeral port sending 8 KiB; the duration is then not used.
`hold`: N connections that send nothing, held S seconds (handshake experiments).
Errors are counted, never fatal; every socket operation has a timeout.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from retransmon.chaos.errors import CommandError, TestbedError
from retransmon.chaos.netns import NetNamespace

BUFFER_SIZE = 256 * 1024
CHURN_REQUEST_SIZE = 8 * 1024
SOCKET_TIMEOUT = 30.0
SINK_IDLE_TIMEOUT = 300.0  # a sink connection with no data for this long is dropped
SINK_START_TIMEOUT = 30.0  # a generous bound: Python starts slowly on an emulated CPU


# --- command line -----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retransmon.chaos.traffic", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sink = sub.add_parser("sink", help="accept connections and discard everything received")
    sink.add_argument("--bind", required=True, help="address to listen on")
    sink.add_argument("--port", type=_port, required=True)
    sink.add_argument("--ready-file", help="written once listening")

    send = sub.add_parser("send", help="push bulk data (or churn short connections) to a sink")
    send.add_argument("--host", required=True)
    send.add_argument("--port", type=_port, required=True)
    send.add_argument("--flows", type=_positive_int, default=1, help="parallel connections")
    send.add_argument("--duration", type=_non_negative_float, default=10.0, help="seconds (bulk mode)")
    send.add_argument(
        "--bytes", type=_positive_int, dest="nbytes", help="stop each flow after this many bytes"
    )
    send.add_argument("--connections", type=_positive_int, help="churn mode: this many short connections")
    send.add_argument("--json", action="store_true", help="print the summary as JSON")

    hold = sub.add_parser("hold", help="open connections that send nothing, hold them, close them")
    hold.add_argument("--host", required=True)
    hold.add_argument("--port", type=_port, required=True)
    hold.add_argument("--count", type=_positive_int, default=1)
    hold.add_argument("--hold", type=_non_negative_float, default=3.0, help="seconds")
    hold.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# --- sink -------------------------------------------------------------------------------------


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _discard(conn: socket.socket) -> None:
    buf = bytearray(BUFFER_SIZE)
    with conn:
        try:
            conn.settimeout(SINK_IDLE_TIMEOUT)
            while conn.recv_into(buf):
                pass
            # EOF: the sender has shut down its side; closing ours lets it finish.
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def run_sink(bind: str, port: int, ready_file: str | None = None) -> int:
    """Accept connections until SIGTERM/SIGINT, one discarding thread per connection."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with socket.socket(_family(bind), socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind, port))
        listener.listen(1024)
        listener.settimeout(0.2)  # wake up to notice `stop`
        if ready_file:
            tmp = f"{ready_file}.tmp"
            Path(tmp).write_text(f"{os.getpid()}\n")
            os.replace(tmp, ready_file)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    break
                time.sleep(0.01)  # e.g. EMFILE: back off rather than spin
                continue
            threading.Thread(target=_discard, args=(conn,), daemon=True).start()
    return 0


# --- senders ----------------------------------------------------------------------------------


@dataclass
class Summary:
    mode: str
    bytes_sent: int = 0
    connections: int = 0  # connections established
    errors: int = 0
    seconds: float = 0.0
    first_error: str | None = None


class _Tally:
    """Thread-safe accumulation into a Summary."""

    def __init__(self, mode: str) -> None:
        self.summary = Summary(mode)
        self._lock = threading.Lock()

    def connected(self) -> None:
        with self._lock:
            self.summary.connections += 1

    def sent(self, n: int) -> None:
        with self._lock:
            self.summary.bytes_sent += n

    def error(self, exc: BaseException) -> None:
        with self._lock:
            self.summary.errors += 1
            if self.summary.first_error is None:
                self.summary.first_error = f"{type(exc).__name__}: {exc}"


def _finish(sock: socket.socket) -> None:
    """Shut down our side and read until the peer closes: everything we sent is then acknowledged."""
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass


def _bulk_flow(host: str, port: int, deadline: float, nbytes: int | None, tally: _Tally) -> None:
    buf = memoryview(bytes(BUFFER_SIZE))
    try:
        with socket.create_connection((host, port), timeout=SOCKET_TIMEOUT) as sock:
            tally.connected()
            sent = 0
            while time.monotonic() < deadline and (nbytes is None or sent < nbytes):
                chunk = buf if nbytes is None else buf[: min(BUFFER_SIZE, nbytes - sent)]
                sock.sendall(chunk)
                sent += len(chunk)
                tally.sent(len(chunk))
            _finish(sock)
    except OSError as exc:
        tally.error(exc)


def _run_threads(target: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def send_bulk(host: str, port: int, flows: int, duration: float, nbytes: int | None = None) -> Summary:
    tally = _Tally("bulk")
    start = time.monotonic()
    deadline = start + duration
    _run_threads(lambda: _bulk_flow(host, port, deadline, nbytes, tally), flows)
    tally.summary.seconds = round(time.monotonic() - start, 3)
    return tally.summary


def send_churn(host: str, port: int, connections: int, parallel: int) -> Summary:
    tally = _Tally("churn")
    request = bytes(CHURN_REQUEST_SIZE)
    remaining = [connections]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                with socket.create_connection((host, port), timeout=SOCKET_TIMEOUT) as sock:
                    tally.connected()
                    sock.sendall(request)
                    tally.sent(len(request))
                    _finish(sock)
            except OSError as exc:
                tally.error(exc)

    start = time.monotonic()
    _run_threads(worker, min(parallel, connections))
    tally.summary.seconds = round(time.monotonic() - start, 3)
    return tally.summary


def hold_connections(host: str, port: int, count: int, hold: float) -> Summary:
    """Open `count` connections, send nothing for `hold` seconds, then close them cleanly."""
    tally = _Tally("hold")
    start = time.monotonic()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                socks.append(socket.create_connection((host, port), timeout=SOCKET_TIMEOUT))
                tally.connected()
            except OSError as exc:
                tally.error(exc)
        time.sleep(hold)
        for sock in socks:
            try:
                _finish(sock)
            except OSError as exc:
                tally.error(exc)
    finally:
        for sock in socks:
            sock.close()
    tally.summary.seconds = round(time.monotonic() - start, 3)
    return tally.summary


def _report(summary: Summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(summary)))
    else:
        print(
            f"{summary.mode}: sent {summary.bytes_sent} bytes over {summary.connections} connections "
            f"in {summary.seconds:.1f} s, {summary.errors} errors"
            + (f" (first: {summary.first_error})" if summary.first_error else "")
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "sink":
            return run_sink(args.bind, args.port, args.ready_file)
        if args.command == "send":
            if args.connections is not None:
                summary = send_churn(args.host, args.port, args.connections, args.flows)
            else:
                summary = send_bulk(args.host, args.port, args.flows, args.duration, args.nbytes)
        else:
            summary = hold_connections(args.host, args.port, args.count, args.hold)
    except (OSError, ValueError) as exc:  # e.g. the sink cannot bind
        print(f"traffic {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    _report(summary, args.json)
    return 0


# --- helpers for tests and `retransmon chaos` -------------------------------------------------


def module_env() -> dict[str, str]:
    """This environment, with the directory holding `retransmon` first on PYTHONPATH."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


MODULE = "retransmon.chaos.traffic"  # run as `python -m`: how chaos --cleanup knows its processes


def module_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", MODULE, *args]


def sender_argv(
    host: str,
    port: int,
    flows: int,
    duration: float,
    *,
    nbytes: int | None = None,
    connections: int | None = None,
) -> list[str]:
    argv = module_argv("send", "--host", host, "--port", str(port), "--flows", str(flows))
    argv += ["--duration", f"{duration:g}", "--json"]
    if nbytes is not None:
        argv += ["--bytes", str(nbytes)]
    if connections is not None:
        argv += ["--connections", str(connections)]
    return argv


def start_sink(ns: NetNamespace, bind: str, port: int) -> subprocess.Popen[str]:
    """Start a sink in ns and wait until it listens; ns.close() ends it."""
    tmpdir = tempfile.mkdtemp(prefix="rmsink-")
    try:
        ready = Path(tmpdir, "ready")
        # stderr goes to a file, not a pipe nobody reads; the sink keeps it open after we unlink it.
        with open(Path(tmpdir, "stderr"), "w+", encoding="utf-8") as err:
            argv = module_argv("sink", "--bind", bind, "--port", str(port), "--ready-file", str(ready))
            proc = ns.popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=module_env(),
            )
            deadline = time.monotonic() + SINK_START_TIMEOUT
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait()
                    err.seek(0)
                    raise CommandError(argv, proc.returncode, "", err.read() or "sink did not start in time")
                time.sleep(0.02)
        return proc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _run_module(ns: NetNamespace, argv: list[str], timeout: float) -> dict[str, object]:
    proc = ns.run(argv, check=False, timeout=timeout, env=module_env())
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise TestbedError(f"traffic generator printed no JSON summary: {proc.stdout!r}") from None
    if not isinstance(result, dict):
        raise TestbedError(f"unexpected traffic summary: {result!r}")
    return result


def run_sender(  # noqa: PLR0917 (the documented signature)
    ns: NetNamespace,
    host: str,
    port: int,
    flows: int,
    duration: float,
    nbytes: int | None = None,
    connections: int | None = None,
    timeout: float | None = None,
) -> dict[str, object]:
    """Run `send` in ns and return its JSON summary (bytes_sent, connections, errors, seconds, ...)."""
    if timeout is None:
        # Generous: a flow ends with a drain that may itself take up to SOCKET_TIMEOUT.
        extra = connections * 1.0 if connections is not None else duration
        timeout = 2 * SOCKET_TIMEOUT + 60 + extra
    return _run_module(
        ns, sender_argv(host, port, flows, duration, nbytes=nbytes, connections=connections), timeout
    )


def run_holder(
    ns: NetNamespace, host: str, port: int, count: int = 1, hold: float = 3.0
) -> dict[str, object]:
    """Run `hold` in ns: `count` idle connections kept `hold` seconds; returns the JSON summary."""
    argv = module_argv("hold", "--host", host, "--port", str(port), "--count", str(count))
    argv += ["--hold", f"{hold:g}", "--json"]
    return _run_module(ns, argv, timeout=hold + count * SOCKET_TIMEOUT + 60)


if __name__ == "__main__":
    sys.exit(main())
