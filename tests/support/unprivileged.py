"""retransmon for another user: a readable copy of the package and its dependencies.

Tests run retransmon as uid 65534 (as the systemd unit does). That user may not be able
to reach the checkout: cloned under /root (mode 0700), neither its .venv nor its BPF
object can be read. So the unprivileged runs get their own copy, staged once per test
session in a world-readable temporary directory: the installed `retransmon` package
(with its BPF object) and its runtime dependencies, run by an interpreter that user can
execute, in isolated mode (no current directory, no environment, no user site).
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from importlib import metadata

import retransmon

NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
FALLBACK_PYTHON = "/usr/bin/python3"


def runtime_distributions(name: str = "retransmon") -> set[str]:
    """The distributions `name` needs at run time (its requirements, recursively, no extras)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            dep = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]
            key = dep.lower().replace("_", "-")
            if key not in seen:
                seen.add(key)
                todo.append(dep)
    return seen


def _copy_distribution(name: str, lib: str) -> None:
    """Copy a distribution's importable files (no scripts outside site-packages) into lib."""
    dist = metadata.distribution(name)
    for f in dist.files or []:
        if f.parts[0] == ".." or f.suffix == ".pyc":
            continue
        src = str(f.locate())
        dst = os.path.join(lib, *f.parts)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)


def _readable(path: str) -> None:
    """a+rX on everything under path."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            p = os.path.join(root, name)
            mode = os.stat(p).st_mode
            os.chmod(
                p, mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (0o111 if stat.S_ISDIR(mode) else 0)
            )
    os.chmod(path, 0o755)


def _runs_as_nobody(python: str) -> bool:
    probe = [*AS_NOBODY, python, "-I", "-c", "import sys; assert sys.version_info >= (3, 11)"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30, cwd="/").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def interpreter() -> str:
    """This Python's own interpreter if uid 65534 can run it, else the system's python3."""
    for candidate in (
        os.path.realpath(sys.executable),
        getattr(sys, "_base_executable", ""),
        FALLBACK_PYTHON,
    ):
        if candidate and _runs_as_nobody(candidate):
            return candidate
    raise RuntimeError(
        f"no Python >= 3.11 that uid {NOBODY} can run (tried {sys.executable}, {FALLBACK_PYTHON})"
    )


@functools.cache
def staged_command() -> tuple[str, ...]:
    """argv that runs retransmon from a copy any user can read (made once per process)."""
    stage = tempfile.mkdtemp(prefix="rmstage-")
    atexit.register(shutil.rmtree, stage, True)
    lib = os.path.join(stage, "lib")
    package = os.path.dirname(retransmon.__file__)
    shutil.copytree(package, os.path.join(lib, "retransmon"), ignore=shutil.ignore_patterns("__pycache__"))
    for name in sorted(runtime_distributions()):
        _copy_distribution(name, lib)
    _readable(stage)
    launcher = (
        f"import sys; sys.path.insert(0, {lib!r}); sys.argv[0] = 'retransmon'; "
        "import runpy; runpy.run_module('retransmon', run_name='__main__', alter_sys=True)"
    )
    return (interpreter(), "-I", "-c", launcher)


def nobody_command(*prefix: str) -> list[str]:
    """`setpriv` as uid 65534 (plus prefix options, e.g. ambient capabilities), then retransmon."""
    return [*AS_NOBODY, *prefix, *staged_command()]
