"""Write deploy/image/seccomp.json: podman's default seccomp profile plus bpf() and perf_event_open().

The default profile (containers-common's /usr/share/containers/seccomp.json, the one podman
4.3 applies) allows ``bpf`` and ``perf_event_open`` only to a container holding
CAP_SYS_ADMIN and refuses them with EPERM otherwise, so `retransmon serve` with only
CAP_BPF and CAP_PERFMON cannot load its programs. This profile is that default, except that
``bpf`` is allowed to a container holding CAP_BPF (or CAP_SYS_ADMIN) and ``perf_event_open``
to one holding CAP_PERFMON (or CAP_SYS_ADMIN); without them both still fail with EPERM.

    .venv/bin/python scripts/seccomp_profile.py [--default PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT = Path("/usr/share/containers/seccomp.json")
OUT = Path(__file__).resolve().parents[1] / "deploy" / "image" / "seccomp.json"
EPERM = 1
# syscall -> the capabilities any one of which lets a container make it.
GRANTED = {"bpf": ("CAP_BPF", "CAP_SYS_ADMIN"), "perf_event_open": ("CAP_PERFMON", "CAP_SYS_ADMIN")}


def with_bpf(default: dict[str, Any]) -> dict[str, Any]:
    """*default* with GRANTED's syscalls taken out of every rule and given rules of their own."""
    profile = copy.deepcopy(default)
    rules: list[dict[str, Any]] = []
    for rule in profile["syscalls"]:
        names = [n for n in rule["names"] if n not in GRANTED]
        if names:
            rules.append({**rule, "names": names})
    for name, caps in GRANTED.items():
        # includes.caps needs all of its capabilities, so one allow rule per capability;
        # excludes.caps skips the rule when any is held.
        rules += [{"names": [name], "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}} for cap in caps]
        rules.append(
            {"names": [name], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": list(caps)}, "errnoRet": EPERM}
        )
    profile["syscalls"] = rules
    return profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", type=Path, default=DEFAULT, help="the runtime's default profile")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        default = json.loads(args.default.read_text())
    except (OSError, ValueError) as exc:
        print(f"seccomp_profile: cannot read {args.default}: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(with_bpf(default), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
