"""retransmon: a TCP retransmission monitor for Linux (eBPF + Prometheus)."""

__version__ = "0.1.0"
