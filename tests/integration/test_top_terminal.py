"""`retransmon top` in a real terminal (tmux, 80x24) during lossy traffic, and off a terminal."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from retransmon.chaos.testbed import TestBed
from tests.support.agent import retransmon_command


class Tmux:
    """A private tmux server (its own socket) running one command in an 80x24 window."""

    def __init__(self, command: str, exit_file: Path) -> None:
        self.socket = f"rmtest-top-{os.getpid()}"
        shell = f"{command}; echo $? > {shlex.quote(str(exit_file))}"
        self._tmux("new-session", "-d", "-x", "80", "-y", "24", shell)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear within {timeout} s; the screen:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def exit_file(tmp_path: Path) -> Path:
    return tmp_path / "exit-status"


@pytest.fixture
def lossy() -> Iterator[TestBed]:
    with TestBed(loss_percent=10, offloads=True) as tb:
        yield tb


def test_top_in_a_terminal_shows_the_lossy_peer_and_quits_on_q(lossy: TestBed, exit_file: Path) -> None:
    command = " ".join(retransmon_command()) + f" top --interval 1 --netns {lossy.client.inode}"
    tmux = Tmux(command, exit_file)
    sender = threading.Thread(target=lossy.send, kwargs={"flows": 4, "duration": 8})
    try:
        tmux.wait_for("retransmon top", timeout=30)
        sender.start()
        peer = f"{lossy.server_ip}:{lossy.port}"
        screen = tmux.wait_for(peer, timeout=20)
        lines = screen.splitlines()
        assert all(len(line) <= 80 for line in lines)
        header = next(line for line in lines if line.startswith("PEER"))
        assert header.split() == ["PEER", "LPORT", "OWNER", "STATE", "WHY", "SEGS/s", "EVT/s", "TOTAL"]
        row = next(line for line in lines if line.startswith(peer))
        assert row.split()[4] in {"fast", "slow", "rto", "tlp", "syn"}
        assert int(row.split()[-1]) > 0  # total segments
        assert "sorted by segments/s" in screen
        tmux.keys("p")
        tmux.wait_for("sorted by peer", timeout=5)
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_file.exists(), "top did not exit on q"
        assert exit_file.read_text().strip() == "0"
    finally:
        tmux.kill()
        if sender.is_alive():
            sender.join()


def test_top_off_a_terminal_prints_plain_blocks(lossy: TestBed) -> None:
    argv = [
        *retransmon_command(),
        "top",
        "--interval",
        "1",
        "--duration",
        "8",
        "--netns",
        str(lossy.client.inode),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)  # loading the programs
        lossy.send(flows=2, duration=3)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "\x1b" not in out  # no terminal control sequences
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) >= 4
    assert all(" retransmits " in b.splitlines()[0] for b in blocks)
    assert any(f"{lossy.server_ip}:{lossy.port}" in b for b in blocks)
