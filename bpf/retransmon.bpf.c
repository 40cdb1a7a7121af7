// SPDX-License-Identifier: GPL-2.0
/*
 * retransmon kernel side: count retransmitted TCP segments per flow, exactly.
 *
 * The kernel raises RetransSegs and the socket's total_retrans together, so
 * the segments to count for a socket are the growth of its total_retrans.
 * Each socket keeps, in socket storage, how much of total_retrans has been
 * accounted; every retransmit event accounts the difference, and the socket's
 * move to TCP_CLOSE accounts what is left. A failed attempt (the tracepoint's
 * err) then adds exactly what the kernel counted for it, and a run skipped
 * for recursion is caught up by the next event or at close.
 *
 * Counts are added to a flow table (a hash map) that user space swaps out
 * from under the programs (an array-of-maps holding the live table) and
 * drains only after the kernel's RCU grace period, so no increment can land
 * in a table that is being read.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "retransmon.h"

#define AF_INET 2
#define AF_INET6 10

char LICENSE[] SEC("license") = "GPL";

/* Set by user space before load. */
const volatile bool has_err_arg = false;    /* tcp_retransmit_skb(sk, skb, err) */
const volatile bool use_sk_storage = true;  /* exact per-socket accounting */
const volatile bool has_sk_cgroup = true;   /* sock_cgroup_data.cgroup exists */
const volatile __u32 flow_capacity = 16384; /* full flows per table, then coarse keys */
const volatile bool count_flows = true;     /* false for trace and top: nobody drains the tables */

/* The kernel's HZ, for the RTO in milliseconds; 0 (weak) when libbpf cannot read the kernel config. */
extern unsigned int CONFIG_HZ __kconfig __weak;

/* Per-socket retransmit accounting state (socket storage; handlers hold the socket lock). */
struct sock_state {
	__u32 retrans_seen; /* the part of total_retrans already accounted */
	__u32 flags;
	__u32 owner_pid;
	__u16 lport; /* local port, kept for the close: the kernel unbinds it first */
	__u8 last_state; /* the state before TCP_CLOSE, should the close run be skipped */
	__u8 last_cause; /* the cause of the last accounted retransmit, and when it was: */
	__u32 last_high_seq;  /* tp->high_seq, set at each entry to Recovery or Loss */
	__u32 last_total_rto; /* tp->total_rto, raised by every RTO (6.7+) */
	char owner_comm[RM_COMM_LEN];
};
#define SOCK_STATE_BASELINE 0x1 /* retrans_seen is valid */
#define SOCK_STATE_PASSIVE 0x2  /* accepted from a listener */

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} sock_states SEC(".maps");

/*
 * Per-socket segments-sent accounting state, keyed by the socket's address.
 * Not socket storage: the harvest iterator reaches sockets through
 * bpf_sock_from_file(), and some kernels (6.18 builds among them) hand it
 * sock->sk as an untrusted pointer, which socket storage refuses. A hash
 * keyed by address works everywhere; the close handler deletes the entry.
 *
 * `word` packs SENT_VALID, SENT_CLOSED, a tag of the socket's address and
 * the part of segs_out already accounted (low 32 bits). It is written only
 * by compare-and-swap: the iterator runs without the socket lock,
 * concurrently with the close handler, and a deleted entry may be reused
 * for another socket while the iterator still holds it; the tag makes such
 * an entry fail the check instead of being added to.
 */
struct sent_state {
	__u64 word;
	__u32 owner_pid; /* known when the iterator found the socket first */
	__u16 lport;     /* kept for the close, like sock_state.lport */
	__u8 passive;    /* accepted from a listener */
	__u8 pad;
	char owner_comm[RM_COMM_LEN];
};

#define SENT_VALID (1ULL << 62)  /* word holds a baseline */
#define SENT_CLOSED (1ULL << 63) /* accounted at close: nothing more to add */
#define SENT_TAG_MASK (0x3fffffffULL << 32)
#define SENT_SEEN_MASK 0xffffffffULL
#define SENT_CAS_TRIES 4

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144); /* resized by user space */
	__type(key, __u64);
	__type(value, struct sent_state);
} sent_states SEC(".maps");

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

/* Listening ports per namespace: the service_port label, and accepted sockets' owner. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct listen_key);
	__type(value, struct listen_info);
} listeners SEC(".maps");

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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loss_counts);
} losses SEC(".maps");

static const struct flow_key meta_key = {.flags = RM_FLOW_META};

static __always_inline struct loss_counts *loss_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&losses, &zero);
}

static __always_inline void add_counts(struct flow_counts *c, __u64 events, __u64 segments)
{
	__sync_fetch_and_add(&c->events, events);
	__sync_fetch_and_add(&c->segments, segments);
}

/* Add to the flow's counters; a full table folds new flows into coarse keys. */
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

	/* First try the flow itself, then (table full) its coarse key. */
	for (i = 0; i < 2; i++) {
		counts = bpf_map_lookup_elem(table, key);
		if (counts) {
			add_counts(counts, events, segments);
			return;
		}
		meta = bpf_map_lookup_elem(table, &meta_key);
		if (!(key->flags & RM_FLOW_COARSE) && meta && meta->events >= flow_capacity) {
			key->flags |= RM_FLOW_COARSE;
			__builtin_memset(key->laddr, 0, sizeof(key->laddr));
			__builtin_memset(key->raddr, 0, sizeof(key->raddr));
			key->lport = 0;
			key->rport = 0;
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
			break;
		key->flags |= RM_FLOW_COARSE;
		__builtin_memset(key->laddr, 0, sizeof(key->laddr));
		__builtin_memset(key->raddr, 0, sizeof(key->raddr));
		key->lport = 0;
		key->rport = 0;
	}
unaccounted:
	lost = loss_slot();
	if (lost) {
		lost->unaccounted_events += events;
		lost->unaccounted_segments += segments;
	}
}

/*
 * Two ways to read kernel memory below. Hooks that get typed pointers (tp_btf,
 * the iterator) load fields directly: one instruction each, checked by the
 * verifier. The classic tracepoints get plain addresses, which only
 * bpf_probe_read_kernel() (BPF_CORE_READ) may read: a helper call per field,
 * several times slower. Hence the *_probed twins of the few readers those use.
 */
static __always_inline __u64 sock_cgroup_id(const struct sock *sk)
{
	if (!has_sk_cgroup)
		return 0;
	return sk->sk_cgrp_data.cgroup->kn->id;
}

static __always_inline __u64 sock_cgroup_id_probed(const struct sock *sk)
{
	if (!has_sk_cgroup)
		return 0;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

static __always_inline bool is_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/* ::ffff:a.b.c.d -> a.b.c.d in the first four bytes, the rest zero. */
static __always_inline void unmap_v4(__u8 *a)
{
	__u32 *w = (__u32 *)a;

	w[0] = w[3];
	w[1] = w[2] = w[3] = 0;
}

/* IPv4 on a dual-stack socket: key it as IPv4, so folded keys keep the version. */
static __always_inline void unmap_if_v4_mapped(struct flow_key *key)
{
	if (key->family == AF_INET6 && is_v4_mapped(key->raddr)) {
		key->family = AF_INET;
		unmap_v4(key->laddr);
		unmap_v4(key->raddr);
	}
}

static __always_inline void copy_v6(__u8 *dst, const struct in6_addr *src)
{
	__u32 *d = (__u32 *)dst;

	d[0] = src->in6_u.u6_addr32[0];
	d[1] = src->in6_u.u6_addr32[1];
	d[2] = src->in6_u.u6_addr32[2];
	d[3] = src->in6_u.u6_addr32[3];
}

/* Fill addresses, ports, family and netns from a socket or request socket. */
static __always_inline void key_from_common(struct flow_key *key, const struct sock_common *skc)
{
	key->netns = skc->skc_net.net->ns.inum;
	key->family = skc->skc_family;
	key->lport = skc->skc_num;
	key->rport = bpf_ntohs(skc->skc_dport);
	if (key->family == AF_INET6) {
		copy_v6(key->laddr, &skc->skc_v6_rcv_saddr);
		copy_v6(key->raddr, &skc->skc_v6_daddr);
		unmap_if_v4_mapped(key);
	} else {
		*(__u32 *)key->laddr = skc->skc_rcv_saddr;
		*(__u32 *)key->raddr = skc->skc_daddr;
	}
}

static __always_inline void key_from_common_probed(struct flow_key *key, const struct sock_common *skc)
{
	key->netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	key->family = BPF_CORE_READ(skc, skc_family);
	key->lport = BPF_CORE_READ(skc, skc_num);
	key->rport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	if (key->family == AF_INET6) {
		BPF_CORE_READ_INTO(&key->laddr, skc, skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&key->raddr, skc, skc_v6_daddr.in6_u.u6_addr8);
		unmap_if_v4_mapped(key);
	} else {
		BPF_CORE_READ_INTO((__u32 *)key->laddr, skc, skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)key->raddr, skc, skc_daddr);
	}
}

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

static __always_inline __u32 skb_segments(const struct sk_buff *skb)
{
	const struct tcp_skb_cb *cb = (const struct tcp_skb_cb *)&skb->cb[0];
	__u16 segs = cb->tcp_gso_segs;

	return segs ? segs : 1;
}

static __always_inline __u32 skb_segments_probed(const struct sk_buff *skb)
{
	struct tcp_skb_cb *cb = (struct tcp_skb_cb *)&skb->cb[0];
	__u16 segs = BPF_CORE_READ(cb, tcp_gso_segs);

	return segs ? segs : 1;
}

/* The hooks' own socket (a trusted pointer) seen as the tcp_sock it is. */
static __always_inline __u32 sock_total_retrans(const struct sock *sk)
{
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

	return tp ? tp->total_retrans : 0;
}

/* Probed: the iterator's socket pointer may be untrusted, which bpf_skc_to_tcp_sock() refuses. */
static __always_inline __u32 sock_segs_out(const struct sock *sk)
{
	return BPF_CORE_READ((const struct tcp_sock *)sk, segs_out);
}

/* The flow key of a full socket: its addresses and cgroup; lport if the kernel has unbound it. */
static __always_inline void key_for_sock(struct flow_key *key, const struct sock *sk, __u16 lport, bool passive)
{
	key_from_common(key, &sk->__sk_common);
	key->cgroup = sock_cgroup_id(sk);
	if (!key->lport)
		key->lport = lport; /* at TCP_CLOSE inet_put_port() has zeroed it */
	if (passive)
		key->flags |= RM_FLOW_PASSIVE;
}

static __always_inline __u16 sock_lport(const struct sock *sk)
{
	return sk->__sk_common.skc_num;
}

/* connect() picks the local port after SYN_SENT, and the close zeroes it: keep it when known. */
static __always_inline void remember_port(struct sock_state *st, const struct sock *sk)
{
	__u16 port = sock_lport(sk);

	if (port)
		st->lport = port;
}

/* The socket's address as a number (the verifier allows no arithmetic on pointers). */
static __always_inline __u64 sent_key_of(const struct sock *sk)
{
	__u64 addr = 0;

	bpf_probe_read_kernel(&addr, sizeof(addr), &sk);
	return addr;
}

/* 30 bits of the socket's address: tells a reused entry from this socket's. */
static __always_inline __u64 sent_tag_of(__u64 addr)
{
	return (((addr >> 4) ^ (addr >> 34)) << 32) & SENT_TAG_MASK;
}

/*
 * Start counting a socket's sent segments: from now on, plus `already`
 * sent before (an accepted connection's SYN-ACKs). `replace` drops whatever
 * entry the address had (connect(): a new connection on this socket);
 * otherwise an existing baseline wins. Returns the entry, or NULL (and a
 * lost-socket count) when the table is full.
 */
static __always_inline struct sent_state *sent_start(const struct sock *sk, __u32 already, bool replace)
{
	struct sent_state init = {};
	struct sent_state *ss;
	struct loss_counts *lost;
	__u64 key = sent_key_of(sk);

	init.word = SENT_VALID | sent_tag_of(key) | (__u32)(sock_segs_out(sk) - already);
	init.lport = sock_lport(sk);
	if (bpf_map_update_elem(&sent_states, &key, &init, replace ? BPF_ANY : BPF_NOEXIST) == 0 || !replace) {
		ss = bpf_map_lookup_elem(&sent_states, &key);
		if (ss)
			return ss;
	}
	lost = loss_slot();
	if (lost)
		__sync_fetch_and_add(&lost->untracked_sockets, 1);
	return NULL;
}

/*
 * Add the growth of segs_out since it was last accounted to the socket's
 * sent flow. The iterator (no socket lock) and the close handler may race
 * on one socket: whoever moves the word with compare-and-swap accounts
 * exactly the segments it moved it over, so nothing is counted twice; a
 * loser re-reads and retries. `closing` marks the entry so that an
 * iterator still holding it accounts nothing after the socket is gone
 * (or reused by tcp_disconnect(), which resets segs_out). Deltas are
 * signed: a stale read never adds a wrapped-around number.
 */
static __always_inline void account_sent(const struct sock *sk, struct sent_state *ss, bool closing)
{
	struct flow_key key = {};
	__u64 word, next, tag = sent_tag_of(sent_key_of(sk));
	__u32 now;
	__s32 delta;
	int i;

	for (i = 0; i < SENT_CAS_TRIES; i++) {
		word = *(volatile __u64 *)&ss->word;
		if (!(word & SENT_VALID) || (word & SENT_CLOSED) || (word & SENT_TAG_MASK) != tag)
			return;
		now = sock_segs_out(sk);
		delta = (__s32)(now - (__u32)(word & SENT_SEEN_MASK));
		if (delta <= 0 && !closing)
			return;
		next = SENT_VALID | tag | now | (closing ? SENT_CLOSED : 0);
		if (__sync_val_compare_and_swap(&ss->word, word, next) != word)
			continue;
		if (delta <= 0)
			return;
		key_for_sock(&key, sk, ss->lport, ss->passive);
		key.kind = RM_KIND_SENT;
		account(&key, 0, delta);
		return;
	}
}

/* At TCP_CLOSE (and when the iterator finds a closed socket): account the rest, drop the entry. */
static __always_inline void sent_finish(const struct sock *sk)
{
	__u64 key = sent_key_of(sk);
	struct sent_state *ss;

	ss = bpf_map_lookup_elem(&sent_states, &key);
	if (!ss)
		return;
	account_sent(sk, ss, true);
	bpf_map_delete_elem(&sent_states, &key);
}

/*
 * Segments the kernel counted for this socket since it was last accounted.
 * counted_now is what this event counted on its own, used only the first
 * time a socket is seen (one that existed before we attached).
 */
static __always_inline __u32 retrans_delta(__u32 total, struct sock_state *st, __u32 counted_now)
{
	__u32 delta;

	if (!(st->flags & SOCK_STATE_BASELINE)) {
		st->retrans_seen = total - counted_now;
		st->flags |= SOCK_STATE_BASELINE;
	}
	delta = total - st->retrans_seen;
	st->retrans_seen = total;
	return delta;
}

/*
 * A socket first seen at a retransmit (it existed before we attached): count
 * its sent segments from here, this retransmit included, and take the owner
 * the iterator may have found for it.
 */
static __always_inline void first_seen(struct sock_state *st, const struct sock *sk, __u32 counted_now)
{
	struct sent_state *ss = sent_start(sk, counted_now, false);

	if (ss && !st->owner_pid && ss->owner_pid) {
		st->owner_pid = ss->owner_pid;
		__builtin_memcpy(st->owner_comm, ss->owner_comm, sizeof(st->owner_comm));
	}
}

/* include/net/inet_connection_sock.h and tcp.h: defines, so not in BTF; stable since 4.x. */
#define ICSK_TIME_LOSS_PROBE 5
#define TCPHDR_SYN 0x02

/*
 * Why the kernel retransmitted this skb, decided the way the kernel decides
 * which TcpExt counter to raise (docs/counting.md):
 *   - a SYN: __tcp_retransmit_skb() raises TCPSynRetrans with RetransSegs,
 *     whoever called it (SYN-ACKs have their own tracepoint);
 *   - icsk_pending 0: the write timer handler clears it just before
 *     tcp_retransmit_timer(), whose retransmit this is; the retransmit queue
 *     always runs with a timer armed (it has segments out);
 *   - a refused send (err): tcp_xmit_retransmit_queue() adds only successful
 *     ones to its counters, so it is in RetransSegs alone, like the timer's;
 *   - the Loss state: the queue after a timeout, TCPSlowStartRetrans;
 *   - icsk_pending LOSS_PROBE in the Open state: tcp_send_loss_probe(), run by
 *     the timer with icsk_pending still set; the queue has nothing lost in Open;
 *   - anything else is the queue in Recovery (or Disorder, CWR): TCPFastRetrans.
 */
static __always_inline __u8 retransmit_cause(const struct tcp_sock *tp, const struct sk_buff *skb,
					     const struct sock_state *st, int err)
{
	const struct tcp_skb_cb *cb;
	__u8 pending, ca_state;

	if (!skb)
		return RM_CAUSE_SYN; /* a passive Fast Open socket's SYN-ACK */
	cb = (const struct tcp_skb_cb *)&skb->cb[0];
	if (cb->tcp_flags & TCPHDR_SYN)
		return RM_CAUSE_SYN;
	if (!tp)
		return RM_CAUSE_TIMEOUT;
	pending = tp->inet_conn.icsk_pending;
	if (!pending || err)
		return RM_CAUSE_TIMEOUT;
	ca_state = BPF_CORE_READ_BITFIELD(&tp->inet_conn, icsk_ca_state);
	if (ca_state == TCP_CA_Loss)
		return RM_CAUSE_SLOW_START;
	if (pending == ICSK_TIME_LOSS_PROBE && ca_state == TCP_CA_Open)
		return RM_CAUSE_TLP;
	return RM_CAUSE_FAST;
}

/*
 * A run the kernel skipped is caught up by the socket's next retransmit. Its
 * segments are of that retransmit's cause when the socket's last accounted
 * retransmit had the same cause in the same episode: no recovery or loss
 * episode began in between (high_seq is set at each entry) and no RTO fired
 * (total_rto counts every one). Only the queue repeats a cause within an
 * episode (each timeout raises total_rto; a loss probe needs the Open state,
 * which ends the episode), so this holds for fast and slow_start, the causes
 * a storm skips. Kernels before 6.7 have no total_rto: nothing is matched.
 */
static __always_inline bool same_episode(const struct sock_state *st, const struct tcp_sock *tp, __u8 cause)
{
	if (!tp || !bpf_core_field_exists(tp->total_rto))
		return false;
	return st->last_cause == cause && st->last_high_seq == tp->high_seq &&
	       st->last_total_rto == tp->total_rto;
}

static __always_inline void remember_episode(struct sock_state *st, const struct tcp_sock *tp, __u8 cause)
{
	st->last_cause = cause;
	if (tp && bpf_core_field_exists(tp->total_rto)) {
		st->last_high_seq = tp->high_seq;
		st->last_total_rto = tp->total_rto;
	}
}

/* Segments whose cause is not known (caught up from a skipped run, or found at close): timeout. */
static __always_inline void account_unclassified(struct flow_key *key, __u32 segments)
{
	struct loss_counts *lost = loss_slot();

	key->cause = RM_CAUSE_TIMEOUT;
	account(key, 0, segments);
	if (lost)
		lost->unclassified_segments += segments;
}

static __always_inline void handle_retransmit(struct sock *sk, const struct sk_buff *skb, int err, __u8 kind,
					      __u8 state)
{
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct flow_key key = {};
	struct sock_state *st = NULL;
	__u32 counted_now, segments, own;

	/* Before 6.x the tracepoint fired only for transmitted segments (err 0). */
	counted_now = err ? 0 : (skb ? skb_segments(skb) : 1);
	segments = counted_now;
	if (use_sk_storage) {
		st = bpf_sk_storage_get(&sock_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st) {
			remember_port(st, sk);
			if (!(st->flags & SOCK_STATE_BASELINE))
				first_seen(st, sk, counted_now);
			segments = retrans_delta(tp ? tp->total_retrans : 0, st, counted_now);
		}
	}
	if (!segments)
		return;
	key_for_sock(&key, sk, st ? st->lport : 0, st && (st->flags & SOCK_STATE_PASSIVE));
	key.state = state;
	key.kind = kind;
	key.cause = retransmit_cause(tp, skb, st, err);
	emit_event(&key, segments, 0, st, tp);
	/* This skb's own segments are of its cause; more is a skipped run's, caught up here. */
	own = err || segments <= counted_now || (st && same_episode(st, tp, key.cause)) ? segments : counted_now;
	if (st)
		remember_episode(st, tp, key.cause);
	account(&key, 1, own);
	if (segments > own)
		account_unclassified(&key, segments - own);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_btf_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb)
{
	int err = 0;

	if (has_err_arg)
		err = (int)ctx[2];
	handle_retransmit(sk, skb, err, RM_KIND_RETRANSMIT, sk->__sk_common.skc_state);
	return 0;
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tp_btf_tcp_retransmit_synack, struct sock *sk, struct request_sock *req)
{
	struct flow_key key = {};

	/*
	 * A passive Fast Open socket retransmits its own SYN-ACK and raises its
	 * total_retrans with RetransSegs; account it like any retransmit.
	 */
	if (sk->__sk_common.skc_state != TCP_LISTEN) {
		handle_retransmit(sk, NULL, 0, RM_KIND_SYNACK, TCP_SYN_RECV);
		return 0;
	}
	/* Otherwise the listener answers for a request socket: one segment. */
	key_from_common(&key, &req->__req_common);
	key.state = TCP_SYN_RECV;
	key.kind = RM_KIND_SYNACK;
	key.flags = RM_FLOW_PASSIVE;
	key.cgroup = sock_cgroup_id(sk);
	key.cause = RM_CAUSE_SYN;
	emit_event(&key, 1, 0, use_sk_storage ? bpf_sk_storage_get(&sock_states, sk, 0, 0) : NULL, NULL);
	account(&key, 1, 1);
	return 0;
}

static __always_inline void remember_owner(struct sock_state *st)
{
	st->owner_pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(st->owner_comm, sizeof(st->owner_comm));
}

static __always_inline void listen_key_of(struct listen_key *lk, const struct sock *sk)
{
	lk->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	lk->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	lk->pad = 0;
}

/* Count listening sockets per (netns, port); the last one out removes the entry. */
static __always_inline void track_listener(const struct sock *sk, bool listening)
{
	struct listen_info init = {.sockets = 1}, *l;
	struct listen_key lk;

	listen_key_of(&lk, sk);
	l = bpf_map_lookup_elem(&listeners, &lk);
	if (listening) {
		/* listen() runs in process context: current owns the listener. */
		if (!l) {
			bpf_map_update_elem(&listeners, &lk, &init, BPF_NOEXIST);
			l = bpf_map_lookup_elem(&listeners, &lk);
			if (!l)
				return;
		} else {
			__sync_fetch_and_add(&l->sockets, 1);
		}
		l->owner_pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(l->owner_comm, sizeof(l->owner_comm));
	} else if (l) {
		__sync_fetch_and_add(&l->sockets, -1);
		if (l->sockets == 0)
			bpf_map_delete_elem(&listeners, &lk);
	}
}

/* An accepted socket is owned by whoever listens on its port (the accept() caller, in practice). */
static __always_inline void inherit_listener_owner(struct sock_state *st, const struct sock *sk)
{
	struct listen_key lk;
	struct listen_info *l;

	listen_key_of(&lk, sk);
	l = bpf_map_lookup_elem(&listeners, &lk);
	if (!l)
		return;
	st->owner_pid = l->owner_pid;
	__builtin_memcpy(st->owner_comm, l->owner_comm, sizeof(st->owner_comm));
}

/*
 * TCP_CLOSE: account what is left of the socket's total_retrans (segments
 * whose own retransmit run was skipped) and of its segs_out, and drop its
 * records. tcp_disconnect() may reuse the socket: it starts over at SYN_SENT.
 */
static __always_inline void settle_close(struct sock *sk, int oldstate)
{
	struct flow_key key = {};
	struct sock_state *st;
	__u32 delta;

	sent_finish(sk);
	st = bpf_sk_storage_get(&sock_states, sk, 0, 0);
	if (!st)
		return;
	if (st->flags & SOCK_STATE_BASELINE) {
		delta = sock_total_retrans(sk) - st->retrans_seen;
		if (delta) {
			key_for_sock(&key, sk, st->lport, st->flags & SOCK_STATE_PASSIVE);
			key.state = oldstate;
			key.kind = RM_KIND_RETRANSMIT;
			key.cause = RM_CAUSE_TIMEOUT;
			emit_event(&key, delta, RM_EVENT_RECONCILED, st, bpf_skc_to_tcp_sock(sk));
			account_unclassified(&key, delta);
		}
	}
	bpf_sk_storage_delete(&sock_states, sk);
}

/*
 * Socket lifecycle: take the baseline when a socket starts (so even its first
 * retransmit is exact), remember the owning process while it is current, and
 * account what is left of total_retrans when the socket closes.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	struct sent_state *ss;
	struct sock_state *st;
	__u64 key64;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_LISTEN || oldstate == TCP_LISTEN)
		track_listener(sk, newstate == TCP_LISTEN);
	if (!use_sk_storage)
		return 0;

	if (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN) {
		/* connect() or listen(): process context, current owns the socket. */
		st = bpf_sk_storage_get(&sock_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!st)
			return 0;
		st->retrans_seen = sock_total_retrans(sk);
		st->flags |= SOCK_STATE_BASELINE;
		st->last_state = newstate;
		remember_owner(st);
		/* segs_out is 0 here (fresh, or reset by tcp_disconnect): the SYN is counted. */
		if (newstate == TCP_SYN_SENT)
			sent_start(sk, 0, true);
		return 0;
	}
	if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_RECV) {
		/* A passive child starts with total_retrans = its SYN-ACK retransmits, already counted. */
		st = bpf_sk_storage_get(&sock_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st && !(st->flags & SOCK_STATE_BASELINE)) {
			st->retrans_seen = sock_total_retrans(sk);
			st->flags |= SOCK_STATE_BASELINE;
		}
		/*
		 * The listener sent this connection's SYN-ACK and total_retrans
		 * retransmits of it; none is in any socket's segs_out. Count them.
		 */
		ss = sent_start(sk, 1 + sock_total_retrans(sk), false);
		if (ss)
			ss->passive = 1;
		if (st) {
			st->flags |= SOCK_STATE_PASSIVE;
			st->last_state = newstate;
			remember_port(st, sk);
			inherit_listener_owner(st, sk);
		}
		return 0;
	}
	if (newstate != TCP_CLOSE) {
		st = bpf_sk_storage_get(&sock_states, sk, 0, 0);
		if (st) {
			remember_port(st, sk);
			st->last_state = newstate;
		}
		key64 = sent_key_of(sk);
		ss = bpf_map_lookup_elem(&sent_states, &key64);
		if (ss && sock_lport(sk))
			ss->lport = sock_lport(sk);
		return 0;
	}
	settle_close(sk, oldstate);
	return 0;
}

/*
 * A socket being destroyed. Its move to TCP_CLOSE normally settled it and
 * deleted its records already (then this finds nothing). But the kernel skips
 * a tracing program's run that would nest on a CPU, and a skipped close would
 * leave its last retransmitted and sent segments uncounted: this hook, a
 * program of its own, settles such a socket instead, under its last state.
 */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tp_btf_tcp_destroy_sock, struct sock *sk)
{
	struct sock_state *st;

	if (!use_sk_storage)
		return 0;
	st = bpf_sk_storage_get(&sock_states, sk, 0, 0);
	settle_close(sk, st ? st->last_state : TCP_CLOSE);
	return 0;
}

/*
 * At harvest time user space runs this over every open file of every
 * process, in all network namespaces (no setns needed): for each TCP socket
 * held by a process, the segments it sent since the last harvest land in
 * the live flow table before user space swaps it out. A socket seen here for
 * the first time (older than the agent, in any namespace) gets its entry
 * and a baseline. Sockets held by no process (orphans closing, kernel users)
 * are accounted when they close. The socket is not locked here, and its
 * pointer may be untrusted (read with probes, never passed to helpers): see
 * account_sent() for how this and the close handler share an entry.
 */
SEC("iter/task_file")
int iter_sent_segments(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct sent_state *ss;
	struct socket *sock;
	struct sock *sk;
	__u64 key;
	__u16 family;
	int state;

	if (!file || !task)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk; /* untrusted on some kernels: fields can be loaded, helpers refuse it */
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	key = sent_key_of(sk);
	ss = bpf_map_lookup_elem(&sent_states, &key);
	if (ss) {
		if (state == TCP_CLOSE) {
			/* Closed while we were adding its entry (below): finish it now. */
			sent_finish(sk);
			return 0;
		}
		if (sock_lport(sk))
			ss->lport = sock_lport(sk);
		account_sent(sk, ss, false);
		return 0;
	}
	if (state == TCP_CLOSE || state == TCP_LISTEN)
		return 0; /* nothing to send yet: connect()/accept() will take the baseline */
	ss = sent_start(sk, 0, false);
	if (!ss)
		return 0;
	if (!ss->owner_pid) {
		ss->owner_pid = BPF_CORE_READ(task, tgid);
		BPF_CORE_READ_STR_INTO(&ss->owner_comm, task, comm);
	}
	/*
	 * The close handler may have run between our state read and the insert
	 * (it fires before the state changes): then nobody else would delete it.
	 */
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_CLOSE)
		sent_finish(sk);
	return 0;
}

/*
 * Classic tracepoints, for kernels that refuse tp_btf. No socket storage
 * here: each event counts what it carried, so failed attempts and skipped
 * runs are not reconciled (`retransmon check` says so).
 */
struct trace_event_raw_tcp_retransmit_skb___x {
	const void *skbaddr;
	const void *skaddr;
	int err;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_event_sk_skb___x {
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_retransmit_synack___x {
	const void *skaddr;
	const void *req;
} __attribute__((preserve_access_index));

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tracepoint_tcp_retransmit_skb(void *ctx)
{
	const struct sk_buff *skb;
	struct flow_key key = {};
	const struct sock *sk;
	__u32 segments;
	int err = 0;

	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb___x)) {
		struct trace_event_raw_tcp_retransmit_skb___x *args = ctx;

		skb = args->skbaddr;
		sk = args->skaddr;
		if (bpf_core_field_exists(args->err))
			err = args->err;
	} else {
		struct trace_event_raw_tcp_event_sk_skb___x *args = ctx;

		skb = args->skbaddr;
		sk = args->skaddr;
	}
	if (err)
		return 0;
	segments = skb_segments_probed(skb);
	key_from_common_probed(&key, &sk->__sk_common);
	key.state = BPF_CORE_READ(sk, __sk_common.skc_state);
	key.kind = RM_KIND_RETRANSMIT;
	key.cgroup = sock_cgroup_id_probed(sk);
	/* Causes are not told apart here: SYNs are `syn`, every other retransmit `fast` (documented). */
	key.cause = BPF_CORE_READ((struct tcp_skb_cb *)&skb->cb[0], tcp_flags) & TCPHDR_SYN ? RM_CAUSE_SYN
											       : RM_CAUSE_FAST;
	emit_event(&key, segments, 0, NULL, NULL);
	account(&key, 1, segments);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_synack")
int tracepoint_tcp_retransmit_synack(struct trace_event_raw_tcp_retransmit_synack___x *args)
{
	const struct request_sock *req = args->req;
	const struct sock *sk = args->skaddr;
	struct flow_key key = {};

	key_from_common_probed(&key, &req->__req_common);
	key.state = TCP_SYN_RECV;
	key.kind = RM_KIND_SYNACK;
	key.flags = RM_FLOW_PASSIVE;
	key.cgroup = sock_cgroup_id_probed(sk);
	key.cause = RM_CAUSE_SYN;
	emit_event(&key, 1, 0, NULL, NULL);
	account(&key, 1, 1);
	return 0;
}
