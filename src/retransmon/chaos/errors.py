"""Exceptions raised by the test bed."""

from __future__ import annotations

from retransmon.errors import EnvironmentProblem


class TestbedError(EnvironmentProblem):
    """The test network could not be built, driven or torn down."""

    __test__ = False  # not a pytest test class, despite the name


class CommandError(TestbedError):
    """A helper command (ip, nft, tc, ethtool, the traffic generator) failed."""

    def __init__(self, argv: list[str], returncode: int | None, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {returncode}"
        if returncode is None:
            detail = "timed out"
        super().__init__(f"`{' '.join(argv)}` failed: {detail}")


class ImpairmentUnavailable(TestbedError):
    """The requested impairment (e.g. delay without netem) cannot be built on this kernel."""
