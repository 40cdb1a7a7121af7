"""`retransmon serve`: wire the BPF programs, harvester, collector and HTTP server together."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from retransmon import defaults
from retransmon.attribution.cgroups import CgroupResolver
from retransmon.attribution.labels import Projector, parse_labels, sent_labels
from retransmon.attribution.listening import ListeningPorts, scan_proc
from retransmon.export import webconfig
from retransmon.export.exposition import AgentExposition
from retransmon.export.harvester import Harvester, HarvestTimer
from retransmon.export.series import SeriesTable
from retransmon.export.server import MetricsServer, parse_listen, parse_telemetry_path
from retransmon.kernel import capabilities, degraded
from retransmon.kernel.skeleton import ProgramOptions, RetransmonBPF

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    listen: list[str] = field(default_factory=lambda: [defaults.LISTEN_ADDRESS])  # one server each
    telemetry_path: str = defaults.TELEMETRY_PATH
    labels: str = defaults.LABELS
    max_series: int = defaults.MAX_SERIES
    harvest_interval: float = defaults.HARVEST_INTERVAL
    flow_capacity: int = defaults.FLOW_CAPACITY
    socket_capacity: int = defaults.SOCKET_CAPACITY
    hooks: str = defaults.HOOKS
    series_ttl: float | None = None  # seconds a series may stay idle before it is dropped
    drop_capabilities: bool = True  # give up every capability once the programs are attached
    web_config_file: str | None = None  # exporter-toolkit web config: TLS, basic auth, headers


@dataclass
class Agent:
    """Everything `serve` runs, built but not yet serving; close() undoes it all."""

    bpf: RetransmonBPF
    harvester: Harvester
    exposition: AgentExposition

    def close(self) -> None:
        self.bpf.close()


def build_agent(options: ServeOptions) -> Agent:
    """Load and attach the BPF programs and build the metrics pipeline around them."""
    labels = parse_labels(options.labels)
    bpf = RetransmonBPF(
        ProgramOptions(
            hooks=options.hooks,
            flow_capacity=options.flow_capacity,
            socket_capacity=options.socket_capacity,
        )
    )
    bpf.start()
    for line in degraded.missing(bpf):
        log.warning("%s", line)
    try:
        listening = ListeningPorts()
        listening.seed(scan_proc())
        projector = Projector(labels, listening, CgroupResolver().path)
        harvester = Harvester(
            bpf,
            projector,
            retransmits=SeriesTable(labels, options.max_series, options.series_ttl),
            sent=SeriesTable(sent_labels(labels), options.max_series, options.series_ttl),
            listening=listening,
        )
        exposition = AgentExposition(
            harvester.snapshot, labels, [ProcessCollector(registry=None), PlatformCollector(registry=None)]
        )
    except BaseException:
        bpf.close()
        raise
    return Agent(bpf, harvester, exposition)


def drop_capabilities(agent: Agent) -> None:
    if capabilities.drop_and_log(agent.bpf.maps_accessible) is None:
        raise RuntimeError("capabilities must be dropped before serve starts its threads")


def open_servers(options: ServeOptions) -> list[MetricsServer]:
    """One listening server per --web.listen-address; bad input or a busy port fails here, first."""
    addresses = [parse_listen(text) for text in options.listen]
    telemetry_path = parse_telemetry_path(options.telemetry_path)
    parse_labels(options.labels)  # bad input fails before anything is loaded
    web = webconfig.load(options.web_config_file) if options.web_config_file else None
    servers: list[MetricsServer] = []
    try:
        for host, port in addresses:
            servers.append(
                MetricsServer(host, port, CollectorRegistry(), web=web, telemetry_path=telemetry_path)
            )
    except BaseException:
        for server in servers:
            server.server_close()
        raise
    if web is not None and web.http2 and web.context is not None:
        log.info("http_server_config.http2: this server speaks HTTP/1.1 only; clients fall back to it")
    return servers


def serve(options: ServeOptions, stop: threading.Event) -> None:
    """Serve until *stop* is set; always detaches before returning."""
    servers = open_servers(options)  # before BPF is loaded
    try:
        agent = build_agent(options)
    except BaseException:
        for server in servers:
            server.server_close()
        raise
    try:
        if options.drop_capabilities:
            drop_capabilities(agent)  # before any thread starts: capabilities are per thread
        timer = HarvestTimer(agent.harvester, options.harvest_interval)
        timer.start()
        threads = []
        for server, text in zip(servers, options.listen, strict=True):
            server.exposition = agent.exposition
            threads.append(server.serve_in_thread())
            host = parse_listen(text)[0]
            log.info(
                "serving metrics on %s://%s:%d%s%s",
                server.scheme,
                f"[{host}]" if ":" in host else host or "*",
                server.port,
                server.telemetry_path,
                " (basic auth)" if server.auth else "",
            )
        while not stop.wait(1.0):
            pass
        for server in servers:
            server.shutdown()
        for thread in threads:
            thread.join(timeout=5)
        timer.stop()
    finally:
        for server in servers:
            server.server_close()
        agent.close()
        log.info("detached; bye")
