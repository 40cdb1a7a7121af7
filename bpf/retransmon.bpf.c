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
 * This file holds the SEC() handlers and the socket lifecycle; the headers
 * hold the parts they are built from:
 *   common.bpf.h      load-time settings, loss counters
 *   cause.bpf.h       why: the cause label, as the kernel's TcpExt counters split it
 *   sock.bpf.h        socket readers, flow keys
 *   flows.bpf.h       the swapped flow tables and the coarse-key fold
 *   sent.bpf.h        segments sent: the compare-and-swap protocol
 *   sock_state.bpf.h  per-socket retransmit accounting (socket storage)
 *   events.bpf.h      ring-buffer records for trace and top
 *   listeners.bpf.h   listening ports and their owners
 *   core_fixes.bpf.h  the classic tracepoints' record layouts
 */
#include "cause.bpf.h"
#include "common.bpf.h"
#include "core_fixes.bpf.h"
#include "events.bpf.h"
#include "flows.bpf.h"
#include "listeners.bpf.h"
#include "sent.bpf.h"
#include "sock.bpf.h"
#include "sock_state.bpf.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline void handle_retransmit(struct sock *sk, const struct sk_buff *skb, int err, __u8 kind,
					      __u8 state)
{
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct flow_key key = {};
	struct sock_state *st = NULL;
	__u32 counted_now, segments, own;

	/* Before 6.17 the tracepoint fired only for transmitted segments (err 0). */
	counted_now = err ? 0 : (skb ? skb_segments(skb, false) : 1);
	segments = counted_now;
	if (use_sk_storage) {
		st = sock_state_of(sk, true);
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
	key.cause = retransmit_cause(tp, skb, err);
	emit_event(&key, segments, 0, st, tp);
	/* This skb's own segments are of its cause; more is a skipped run's, caught up here. */
	own = err || segments <= counted_now ? segments : counted_now;
	account(&key, 1, own);
	if (segments > own)
		account_unclassified(&key, segments - own);
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
	st = sock_state_of(sk, false);
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

/* connect() (SYN_SENT) or listen(): process context, current owns the socket; take the baseline. */
static __always_inline void sock_started(struct sock *sk, int newstate)
{
	struct sock_state *st = sock_state_of(sk, true);

	if (!st)
		return;
	take_baseline(st, sk, 0);
	st->last_state = newstate;
	remember_owner(st);
	/* segs_out is 0 here (fresh, or reset by tcp_disconnect): the SYN is counted. */
	if (newstate == TCP_SYN_SENT)
		sent_start(sk, 0, true);
}

/*
 * LISTEN -> SYN_RECV: a passive child just cloned from its listener (softirq).
 * Start counting its sent segments here, its SYN-ACK included, and not only
 * at SYN_RECV -> ESTABLISHED: the kernel skips a run of this program that
 * would nest on a CPU (a softirq interrupting it in process context), and a
 * short connection whose only start was skipped, closing before any harvest,
 * would never be counted. Two skipped runs for one socket are needed now.
 * total_retrans is still the listener's here: the SYN-ACK's retransmits are
 * added at ESTABLISHED. The socket is brand new, so an entry already at its
 * address can only be a stale one (a freed socket's): replace it, or its
 * old baseline would hide every segment this connection sends.
 */
static __always_inline void sock_cloned(struct sock *sk)
{
	struct sent_state *ss = sent_start(sk, 1, true);

	if (ss) {
		ss->passive = 1;
		ss->cloned = 1;
	}
}

/* SYN_RECV -> ESTABLISHED: a passive child, owned by whoever listens on its port. */
static __always_inline void sock_accepted(struct sock *sk)
{
	struct sock_state *st = sock_state_of(sk, true);
	struct flow_key key = {};
	struct sent_state *ss;
	__u32 synack_retrans = sock_total_retrans(sk);

	/* It starts with total_retrans = its SYN-ACK retransmits, already counted. */
	if (st && !(st->flags & SOCK_STATE_BASELINE))
		take_baseline(st, sk, 0);
	/*
	 * The listener sent this connection's SYN-ACK and total_retrans
	 * retransmits of it; none is in any socket's segs_out. Count them:
	 * in the baseline, or (entry started at the clone, with the SYN-ACK)
	 * the retransmits on their own.
	 */
	ss = sent_lookup(sk);
	if (ss && ss->cloned) {
		ss->cloned = 0;
		if (synack_retrans) {
			key_for_sock(&key, sk, ss->lport, true);
			key.kind = RM_KIND_SENT;
			account(&key, 0, synack_retrans);
		}
	} else {
		/* Clone run skipped: nothing was sent yet, so any entry here is stale or empty. */
		ss = sent_start(sk, 1 + synack_retrans, true);
	}
	if (ss)
		ss->passive = 1;
	if (st) {
		st->flags |= SOCK_STATE_PASSIVE;
		st->last_state = TCP_ESTABLISHED;
		remember_port(st, sk);
		inherit_listener_owner(st, sk);
	}
}

/* Any other move short of TCP_CLOSE: keep the port and the state for the close. */
static __always_inline void sock_moved(struct sock *sk, int newstate)
{
	struct sock_state *st = sock_state_of(sk, false);
	struct sent_state *ss;

	if (st) {
		remember_port(st, sk);
		st->last_state = newstate;
	}
	ss = sent_lookup(sk);
	if (ss)
		sent_remember_port(ss, sk);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_btf_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb)
{
	int err = has_err_arg ? (int)ctx[2] : 0; /* the err argument: 6.17+ (see core_fixes.bpf.h) */

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
	key_for_request(&key, sk, req, false);
	key.cause = RM_CAUSE_SYN;
	report(&key, 1, 1, 0, use_sk_storage ? sock_state_of(sk, false) : NULL, NULL);
	return 0;
}

/*
 * Socket lifecycle: take the baseline when a socket starts (so even its first
 * retransmit is exact), remember the owning process while it is current, and
 * account what is left of total_retrans when the socket closes.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* A listener leaves only for TCP_CLOSE; LISTEN -> SYN_RECV is a child being cloned from it. */
	if (newstate == TCP_LISTEN || (oldstate == TCP_LISTEN && newstate == TCP_CLOSE))
		track_listener(sk, newstate == TCP_LISTEN);
	if (!use_sk_storage)
		return 0;
	if (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN)
		sock_started(sk, newstate);
	else if (newstate == TCP_SYN_RECV && oldstate == TCP_LISTEN)
		sock_cloned(sk);
	else if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_RECV)
		sock_accepted(sk);
	else if (newstate != TCP_CLOSE)
		sock_moved(sk, newstate);
	else
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
	st = sock_state_of(sk, false);
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
 * pointer may be untrusted (fields loaded, never passed to helpers): see
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
	__u16 family;
	int state;

	if (!file || !task)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk; /* untrusted on some kernels: fields can be loaded, helpers refuse it */
	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	state = sk->__sk_common.skc_state;
	ss = sent_lookup(sk);
	if (ss) {
		if (state == TCP_CLOSE) {
			/* Closed while we were adding its entry (below): finish it now. */
			sent_finish(sk);
			return 0;
		}
		sent_remember_port(ss, sk);
		account_sent(sk, ss, false);
		return 0;
	}
	if (state == TCP_CLOSE || state == TCP_LISTEN)
		return 0; /* nothing to send yet: connect()/accept() will take the baseline */
	ss = sent_start(sk, 0, false);
	if (!ss)
		return 0;
	if (!ss->owner_pid) {
		ss->owner_pid = task->tgid;
		/* A string: copied up to its NUL, the rest of the zeroed entry stays zero. */
		bpf_probe_read_kernel_str(ss->owner_comm, sizeof(ss->owner_comm), task->comm);
	}
	/*
	 * The close handler may have run between our state read and the insert
	 * (it fires before the state changes): then nobody else would delete it.
	 * skc_state is volatile: this loads it again.
	 */
	if (sk->__sk_common.skc_state == TCP_CLOSE)
		sent_finish(sk);
	return 0;
}

/*
 * Classic tracepoints, for kernels that refuse tp_btf. No socket storage
 * here: each event counts what it carried, so failed attempts and skipped
 * runs are not reconciled (`retransmon check` says so). Their pointers are
 * plain addresses: every read is probed.
 */
SEC("tracepoint/tcp/tcp_retransmit_skb")
int tracepoint_tcp_retransmit_skb(void *ctx)
{
	const struct sk_buff *skb;
	struct flow_key key = {};
	const struct sock *sk;
	__u32 segments;
	int err;

	tp_retransmit_skb_args(ctx, &sk, &skb, &err);
	if (err)
		return 0;
	segments = skb_segments(skb, true);
	key_from_common(&key, &sk->__sk_common, true);
	key.state = BPF_CORE_READ(sk, __sk_common.skc_state);
	key.kind = RM_KIND_RETRANSMIT;
	key.cgroup = sock_cgroup_id(sk, true);
	key.cause = retransmit_cause_probed(skb);
	report(&key, 1, segments, 0, NULL, NULL);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_synack")
int tracepoint_tcp_retransmit_synack(struct trace_event_raw_tcp_retransmit_synack___x *args)
{
	struct flow_key key = {};

	key_for_request(&key, args->skaddr, args->req, true);
	key.cause = RM_CAUSE_SYN;
	report(&key, 1, 1, 0, NULL, NULL);
	return 0;
}
