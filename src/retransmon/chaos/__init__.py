"""`retransmon chaos`: a private lossy network, TCP traffic through it, and what the agent saw.

Modules, one job each:

* testbed: TestBed, the private network itself: two namespaces, a veth, loss (and delay) and a
  sink, built in one object and always removed. Tests, bench/ and scripts/ use it too.
* netns, veth, loss, traffic, process, errors: what TestBed is made of (namespaces, a veth pair,
  nftables or netem impairment, the traffic generator run as ``python -m
  retransmon.chaos.traffic``, helper commands); tests use them directly too.
* options: what the user asked for, validated.
* network: the TestBed one run's options ask for (prefix ``rmchaos``, netem or nftables).
* measure: the agent's series and the kernel's counters turned into a report (pure).
* report: the report as a rich table or JSON.
* run: the orchestration: agent, network, traffic, progress, signals, cleanup.
* cleanup: ``--cleanup``, leftovers of a run that was killed.
* prometheus: a real Prometheus server on loopback (``--prometheus``, tests, screenshots), with
  the shipped prometheus.yml and rules.yml from assets/ (package data).
* demo: ``--prometheus``: check the agent, start Prometheus, hold it until Ctrl-C.
"""
