/* SPDX-License-Identifier: GPL-2.0 */
/* One ring-buffer record per retransmit, for `trace` and `top`; written only while a reader is attached. */
#ifndef __RETRANSMON_EVENTS_BPF_H
#define __RETRANSMON_EVENTS_BPF_H

#include "common.bpf.h"
#include "sock_state.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by user space */
} events SEC(".maps");

/* Ring buffer records carry no type: name it here so it is in the object's BTF for user space's check. */
struct retrans_event *const retrans_event_type __attribute__((used)) = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct runtime_settings);
} settings SEC(".maps");

static __always_inline bool events_wanted(void)
{
	struct runtime_settings *s;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&settings, &zero);
	return s && s->events_wanted;
}

/* The socket's timing at the retransmit, for `trace`: smoothed RTT, RTO and its backoff. */
static __always_inline void event_timing(struct retrans_event *e, const struct tcp_sock *tp)
{
	e->srtt_us = 0;
	e->rto_ms = 0;
	e->backoff = 0;
	if (!tp)
		return;
	e->srtt_us = tp->srtt_us >> 3; /* the kernel keeps it scaled by 8 */
	e->backoff = tp->inet_conn.icsk_backoff;
	if (CONFIG_HZ)
		e->rto_ms = (__u64)tp->inet_conn.icsk_rto * 1000 / CONFIG_HZ;
}

/* `st`, when known, names the owner process; `tp`, when known, gives the timing. */
static __always_inline void emit_event(const struct flow_key *key, __u32 segments, __u8 flags,
				       const struct sock_state *st, const struct tcp_sock *tp)
{
	struct retrans_event *e;
	struct loss_counts *lost;

	if (!events_wanted())
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		lost = loss_slot();
		if (lost)
			lost->events_lost++;
		return;
	}
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup = key->cgroup;
	e->netns = key->netns;
	e->segments = segments;
	e->family = key->family;
	e->state = key->state;
	e->kind = key->kind;
	e->lport = key->lport;
	e->rport = key->rport;
	e->flags = flags;
	e->cause = key->cause;
	e->pad = 0;
	event_timing(e, tp);
	__builtin_memcpy(e->laddr, key->laddr, sizeof(e->laddr));
	__builtin_memcpy(e->raddr, key->raddr, sizeof(e->raddr));
	if (st) {
		e->pid = st->owner_pid;
		__builtin_memcpy(e->comm, st->owner_comm, sizeof(e->comm));
	} else {
		e->pid = 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	}
	bpf_ringbuf_submit(e, 0);
}

/* Emit the record (if wanted) and count it in the flow table. */
static __always_inline void report(struct flow_key *key, __u64 events, __u32 segments, __u8 flags,
				   const struct sock_state *st, const struct tcp_sock *tp)
{
	emit_event(key, segments, flags, st, tp);
	account(key, events, segments);
}

#endif /* __RETRANSMON_EVENTS_BPF_H */
