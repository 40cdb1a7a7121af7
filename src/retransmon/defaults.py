"""Defaults and choices the CLI, the agent and the kernel side share: each is written once, here."""

from __future__ import annotations

# The port the original blog's exporter served on, which Prometheus configs already scrape.
LISTEN_ADDRESS = ":2112"
TELEMETRY_PATH = "/metrics"
LABELS = "default"
MAX_SERIES = 10000  # per metric; the rest is folded into `other` series
HARVEST_INTERVAL = 5.0  # seconds between drains of the kernel's flow table, besides scrapes
FLOW_CAPACITY = 16384  # distinct flows the kernel table holds per harvest before folding
SOCKET_CAPACITY = 262144  # TCP sockets whose segments sent are tracked at once

# Which kernel hooks: auto picks tp_btf where the kernel has it, else the classic tracepoints.
HOOK_MODES = ("auto", "tp_btf", "tracepoint")
HOOKS = "auto"

RING_BUFFER_BYTES = 8 << 20  # 8 MiB: about 87,000 records, over 2 s of a 35,000 events/s storm
MAX_RING_BUFFER_KIB = 1 << 20  # 1 GiB: the kernel's limit is higher, memory is not
