"""Who a flow belongs to: addresses, TCP states, flow keys, label sets, cgroups, containers
and listening ports."""
