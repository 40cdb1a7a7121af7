"""The test network's two dealings with processes: run a helper command (ip, nft, tc, ...) and
end a started process by its PID."""

from __future__ import annotations

import subprocess
from typing import Any

from retransmon.chaos.errors import CommandError


def run_command(
    argv: list[str], check: bool = True, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """subprocess.run in text mode with captured output; raise CommandError if check and it fails."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    try:
        proc = subprocess.run(argv, text=True, timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, _text(exc.stdout), _text(exc.stderr)) from None
    except FileNotFoundError:
        raise CommandError(argv, 127, "", f"{argv[0]}: command not found") from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout or "", proc.stderr or "")
    return proc


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def signal_and_wait(proc: subprocess.Popen[Any], sig: int, timeout: float) -> int:
    """Send `sig` if the process still runs, wait, SIGKILL after `timeout` s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
