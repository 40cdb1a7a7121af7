/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The flow table: counts per flow_key in a hash map that user space swaps out
 * from under the programs (flow_tables[0] holds the live one) and drains only
 * after an RCU grace period. A full table folds new flows into coarse keys.
 */
#ifndef __RETRANSMON_FLOWS_BPF_H
#define __RETRANSMON_FLOWS_BPF_H

#include "common.bpf.h"

/* Two flow tables; one is live (in flow_tables[0]), the other drained by user space. */
struct flow_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384 + 4096 + 1); /* resized by user space */
	__type(key, struct flow_key);
	__type(value, struct flow_counts);
};

struct flow_table flows_a SEC(".maps");
struct flow_table flows_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct flow_table);
} flow_tables SEC(".maps") = {
	.values = {[0] = &flows_a},
};

/* Counts full flows per table (meta->events), for the fold. */
static const struct flow_key meta_key = {.flags = RM_FLOW_META};

static __always_inline void add_counts(struct flow_counts *c, __u64 events, __u64 segments)
{
	__sync_fetch_and_add(&c->events, events);
	__sync_fetch_and_add(&c->segments, segments);
}

/* The coarse key of a flow: addresses and ports zeroed; family, netns, cgroup, state and kind kept. */
static __always_inline void fold_to_coarse(struct flow_key *key)
{
	key->flags |= RM_FLOW_COARSE;
	__builtin_memset(key->laddr, 0, sizeof(key->laddr));
	__builtin_memset(key->raddr, 0, sizeof(key->raddr));
	key->lport = 0;
	key->rport = 0;
}

/*
 * Add to the flow's counters. First the flow itself; once the table holds
 * flow_capacity full flows, or the insert fails, its coarse key instead.
 */
static __always_inline void account(struct flow_key *key, __u64 events, __u64 segments)
{
	struct flow_counts init = {.events = events, .segments = segments};
	struct flow_counts *counts, *meta;
	struct loss_counts *lost;
	__u32 zero = 0;
	void *table;
	int i;

	if (!count_flows || (!events && !segments))
		return;
	table = bpf_map_lookup_elem(&flow_tables, &zero);
	if (!table)
		goto unaccounted;

	for (i = 0; i < 2; i++) {
		counts = bpf_map_lookup_elem(table, key);
		if (counts) {
			add_counts(counts, events, segments);
			return;
		}
		meta = bpf_map_lookup_elem(table, &meta_key);
		if (!(key->flags & RM_FLOW_COARSE) && meta && meta->events >= flow_capacity) {
			fold_to_coarse(key);
			continue;
		}
		if (bpf_map_update_elem(table, key, &init, BPF_NOEXIST) == 0) {
			if (meta && !(key->flags & RM_FLOW_COARSE))
				__sync_fetch_and_add(&meta->events, 1);
			return;
		}
		/* Another CPU inserted the same key first: add to its entry. */
		counts = bpf_map_lookup_elem(table, key);
		if (counts) {
			add_counts(counts, events, segments);
			return;
		}
		if (key->flags & RM_FLOW_COARSE)
			break; /* full even for coarse keys */
		fold_to_coarse(key);
	}
unaccounted:
	lost = loss_slot();
	if (lost) {
		lost->unaccounted_events += events;
		lost->unaccounted_segments += segments;
	}
}

#endif /* __RETRANSMON_FLOWS_BPF_H */
