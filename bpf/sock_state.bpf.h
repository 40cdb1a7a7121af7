/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Exact retransmit accounting per socket (socket storage; the tp_btf handlers
 * hold the socket lock): how much of total_retrans is accounted, the owner,
 * the local port and the last state, for the close.
 */
#ifndef __RETRANSMON_SOCK_STATE_BPF_H
#define __RETRANSMON_SOCK_STATE_BPF_H

#include "common.bpf.h"
#include "sent.bpf.h"
#include "sock.bpf.h"

struct sock_state {
	__u32 retrans_seen; /* the part of total_retrans already accounted */
	__u32 flags;
	__u32 owner_pid;
	__u16 lport; /* local port, kept for the close: the kernel unbinds it first */
	__u8 last_state; /* the state before TCP_CLOSE, should the close run be skipped */
	__u8 pad;
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

static __always_inline struct sock_state *sock_state_of(struct sock *sk, bool create)
{
	return bpf_sk_storage_get(&sock_states, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

/* connect() picks the local port after SYN_SENT, and the close zeroes it: keep it when known. */
static __always_inline void remember_port(struct sock_state *st, const struct sock *sk)
{
	__u16 port = sock_lport(sk);

	if (port)
		st->lport = port;
}

/* Process context (connect(), listen()): current owns the socket. */
static __always_inline void remember_owner(struct sock_state *st)
{
	st->owner_pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(st->owner_comm, sizeof(st->owner_comm));
}

/* From here on, retransmits beyond total_retrans - `counted` are new. */
static __always_inline void take_baseline(struct sock_state *st, const struct sock *sk, __u32 counted)
{
	st->retrans_seen = sock_total_retrans(sk) - counted;
	st->flags |= SOCK_STATE_BASELINE;
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

#endif /* __RETRANSMON_SOCK_STATE_BPF_H */
