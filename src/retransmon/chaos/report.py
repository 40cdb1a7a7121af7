"""A chaos report as rich tables (for people) or JSON (for scripts and tests)."""

from __future__ import annotations

import json

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from retransmon.chaos.measure import CAUSE_CONTEXT, REST, REST_COUNTER, CauseCheck, ChaosReport, NamespaceRow


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def namespace_match(report: ChaosReport, ns: NamespaceRow) -> Text:
    """exact; equal (per event): the sums agree this time, but per-event counting may not; off by N."""
    if report.namespace_exact(ns):
        return Text("exact", style="green")
    if ns.equal:
        return Text("equal (per event)", style="yellow")
    return Text(f"off by {ns.segments - ns.kernel_retrans_segs:+d}", style="bold red")


def namespace_table(report: ChaosReport) -> Table:
    table = Table(
        title="Retransmitted segments: retransmon vs the kernel's RetransSegs", title_justify="left"
    )
    table.add_column("namespace")
    table.add_column("retransmitted\nsegments", justify="right")
    table.add_column("retransmit\nevents", justify="right")
    table.add_column("kernel\nRetransSegs", justify="right")
    table.add_column("match")
    table.add_column("segments\nsent", justify="right")
    table.add_column("kernel OutSegs\n+ RetransSegs", justify="right")
    table.add_column("retransmission\nrate", justify="right")
    table.add_column("kernel's\nrate", justify="right")
    for ns in report.namespaces:
        match = namespace_match(report, ns)
        table.add_row(
            ns.role,
            str(ns.segments),
            str(ns.events),
            str(ns.kernel_retrans_segs),
            match,
            str(ns.sent),
            str(ns.kernel_sent),
            percent(ns.rate),
            percent(ns.kernel_rate),
        )
    return table


MATCH_STYLES = {"exact": "green", "within_unclassified": "yellow", "off": "bold red"}
# Beside the causes without a counter of their own: the RTO's firings, the loss probes sent.
CONTEXT = {"timeout": "TCPTimeouts (firings)", "tail_loss_probe": "TCPLossProbes (probes sent)"}
SHORT_COUNTERS = {REST_COUNTER: "RetransSegs - the three above"}
Row = tuple[str, str, str, str, Text]  # cause, retransmon, kernel counter, kernel, match


def match_text(check: CauseCheck, unclassified: int) -> Text:
    match = check.match(unclassified)
    if match == "exact":
        return Text("exact", style=MATCH_STYLES[match])
    words = "within unclassified" if match == "within_unclassified" else "off"
    return Text(f"{words} by {check.segments - check.kernel:+d}", style=MATCH_STYLES[match])


def check_row(check: CauseCheck, unclassified: int) -> Row:
    counter = SHORT_COUNTERS.get(check.counter, check.counter)
    return check.cause, str(check.segments), counter, str(check.kernel), match_text(check, unclassified)


def cause_rows(ns: NamespaceRow, unclassified: int) -> list[Row]:
    """A namespace's causes with a counter, those without (beside context), then the rest's check."""
    *counted, rest = ns.cause_checks()
    others = [
        (cause, str(ns.causes.get(cause, 0)), CONTEXT[cause], str(ns.kernel_causes.get(name, 0)), Text(""))
        for cause, name in zip(REST, CAUSE_CONTEXT, strict=True)
    ]
    return [*(check_row(c, unclassified) for c in counted), *others, check_row(rest, unclassified)]


def cause_table(report: ChaosReport) -> Table:
    table = Table(
        title="Retransmitted segments by cause: retransmon vs the kernel's TcpExt counters",
        title_justify="left",
    )
    table.add_column("namespace")
    table.add_column("cause")
    table.add_column("retransmon", justify="right")
    table.add_column("kernel counter")
    table.add_column("kernel", justify="right")
    table.add_column("match")
    for ns in report.namespaces:
        rows = cause_rows(ns, report.unclassified_segments)
        for i, (cause, ours, counter, kernel, match) in enumerate(rows):
            table.add_row(
                ns.role if i == 0 else "", cause, ours, counter, kernel, match, end_section=i == len(rows) - 1
            )
    if report.unclassified_segments:
        table.caption = (
            f"{report.unclassified_segments} segments of unknown cause (runs the kernel skipped, "
            "caught up later) are counted as timeout: each cause may be off by that much"
        )
        table.caption_justify = "left"
    return table


def flow_table(report: ChaosReport, show: int) -> Table:
    table = Table(title="Per flow (src is the end that retransmitted)", title_justify="left")
    for name in ("namespace", "src", "dst"):
        table.add_column(name)
    for name in ("segments", "events", "SYN-ACK", "sent", "rate"):
        table.add_column(name, justify="right")
    for row in report.flows[:show]:
        c = row.counts
        table.add_row(
            row.key.role,
            row.key.src,
            row.key.dst,
            str(c.segments),
            str(c.events),
            str(c.synack),
            str(c.sent),
            percent(row.rate),
        )
    hidden = report.flows[show:]
    if hidden:
        table.add_row(
            f"{len(hidden)} more",
            "",
            "",
            str(sum(r.counts.segments for r in hidden)),
            str(sum(r.counts.events for r in hidden)),
            str(sum(r.counts.synack for r in hidden)),
            str(sum(r.counts.sent for r in hidden)),
            "",
            style="dim",
        )
    return table


def headline(report: ChaosReport) -> Text:
    dropped = "" if report.dropped_packets is None else f", {report.dropped_packets} packets dropped"
    state = " (interrupted)" if report.interrupted else ""
    text = Text(
        f"chaos: {report.loss_percent:g}% loss via {report.method}{dropped}, "
        f"{report.seconds:.1f} s of traffic{state}; hooks {report.hooks} ({report.counting})"
    )
    if report.blackhole is not None:
        start, end = report.blackhole
        text.append(f"\nblack hole: every packet to the server dropped from {start:g} s to {end:g} s")
    if report.drop_handshakes:
        n = report.drop_handshakes
        text.append(f"\nhandshakes: the first {n} SYNs and the first {n} SYN-ACKs dropped")
    if report.traffic:
        t = report.traffic
        text.append(
            f"\ntraffic: {t.get('bytes_sent')} bytes over {t.get('connections')} connections, "
            f"{t.get('errors')} errors"
        )
    names = ", ".join(f"{ns.role} {ns.name} (netns {ns.inode})" for ns in report.namespaces)
    text.append(f"\nnamespaces: {names}")
    for note in report.notes:
        text.append(f"\nnote: {note}", style="yellow")
    return text


def render(report: ChaosReport, show: int) -> RenderableType:
    parts: list[RenderableType] = [headline(report), namespace_table(report), cause_table(report)]
    if show > 0:
        parts.append(flow_table(report, show))
    return Group(*parts)


def print_report(report: ChaosReport, show: int, as_json: bool, console: Console) -> None:
    if as_json:
        console.file.write(json.dumps(report.to_json()) + "\n")
        console.file.flush()
    else:
        console.print(render(report, show))
