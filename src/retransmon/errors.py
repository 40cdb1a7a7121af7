"""The two kinds of error a user can cause or meet, and how they exit.

* :class:`UsageError`: bad input (flag, value, config file). One line, exit 2.
* :class:`EnvironmentProblem`: a missing privilege, kernel feature or package.
  The reason and the fix, exit 1.

Anything else escaping to the command line is a bug in retransmon.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_ENVIRONMENT = 1


class RetransmonError(Exception):
    exit_code = EXIT_ENVIRONMENT

    def __init__(self, message: str, fix: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.details = details or []

    def render(self) -> str:
        text = self.message
        if self.fix:
            text += f"; fix: {self.fix}"
        return text


class UsageError(RetransmonError):
    exit_code = EXIT_USAGE


class EnvironmentProblem(RetransmonError):
    exit_code = EXIT_ENVIRONMENT
