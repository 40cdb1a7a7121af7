"""`retransmon chaos`: a private lossy network, TCP traffic through it, and what the agent saw.

Modules, one job each:

* options: what the user asked for, validated.
* network: the namespaces, veth, impairment and sink of one run (prefix ``rmchaos``).
* measure: the agent's series and the kernel's counters turned into a report (pure).
* report: the report as a rich table or JSON.
* run: the orchestration: agent, network, traffic, progress, signals, cleanup.
* cleanup: ``--cleanup``, leftovers of a run that was killed.
* prometheus: a real Prometheus server on loopback (``--prometheus``, tests, screenshots).
* netns, veth, loss, traffic, shell, errors: the private test network itself (namespaces, a veth
  pair, nftables or netem impairment, the traffic generator run as
  ``python -m retransmon.chaos.traffic``); tests and benchmarks build theirs from these too.
"""
