"""1. Kernel cost per retransmit: BPF run time per program run during a storm (bpf_stats)."""

from __future__ import annotations

import os
from typing import Any

from bench.storm import run_storm, storm_bed
from retransmon.kernel import libbpf
from retransmon.kernel.plans import SENT_ITERATOR
from retransmon.kernel.skeleton import PROGRAM_LABELS, RetransmonBPF

TARGET_NS = 150.0


def run(seconds: float = 8.0, rounds: int = 3) -> dict[str, Any]:
    stats_fd = libbpf.enable_run_time_stats()
    try:
        with RetransmonBPF() as bpf, storm_bed() as bed:
            per_round: list[dict[str, dict[str, float]]] = []
            storms = []
            for _ in range(rounds):
                before = bpf.run_stats()
                storm = run_storm(bed, seconds)
                after = bpf.run_stats()
                bpf.collect_sent()  # what a harvest adds: the iterator's cost, measured alone below
                storms.append(storm.segments_per_second)
                per_round.append(
                    {
                        label: {
                            "runs": after[label].run_cnt - before[label].run_cnt,
                            "ns": after[label].run_time_ns - before[label].run_time_ns,
                        }
                        for label in after
                    }
                )
            iterator = bpf.run_stats().get(PROGRAM_LABELS[SENT_ITERATOR])
    finally:
        os.close(stats_fd)
    programs: dict[str, dict[str, float]] = {}
    for label in per_round[0]:
        runs = sum(r[label]["runs"] for r in per_round)
        ns = sum(r[label]["ns"] for r in per_round)
        per_run = sorted(r[label]["ns"] / r[label]["runs"] for r in per_round if r[label]["runs"])
        programs[label] = {
            "runs": runs,
            "ns_per_run": ns / runs if runs else 0.0,
            "ns_per_run_median_round": per_run[len(per_run) // 2] if per_run else 0.0,
        }
    return {
        "storm_segments_per_second": sorted(storms)[len(storms) // 2],
        "seconds_per_round": seconds,
        "rounds": rounds,
        "programs": programs,
        "iterator_runs": iterator.run_cnt if iterator else 0,
        "iterator_ns_per_run": iterator.run_time_ns / iterator.run_cnt
        if iterator and iterator.run_cnt
        else 0,
        "target_ns": TARGET_NS,
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"Storm: {result['storm_segments_per_second']:,.0f} retransmitted segments/s (median of "
        f"{result['rounds']} rounds of {result['seconds_per_round']:g} s; offloads off, so one event each).",
        "",
        "| program | runs | ns per run (all rounds) | median round |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, p in sorted(result["programs"].items()):
        lines.append(
            f"| `{label}` | {p['runs']:,.0f} | {p['ns_per_run']:.0f} | {p['ns_per_run_median_round']:.0f} |"
        )
    return "\n".join(lines)
