/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Segments sent per socket (the rate's denominator), shared by the harvest
 * iterator and the close handler through one compare-and-swapped word.
 *
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
#ifndef __RETRANSMON_SENT_BPF_H
#define __RETRANSMON_SENT_BPF_H

#include "common.bpf.h"
#include "flows.bpf.h"
#include "sock.bpf.h"

struct sent_state {
	__u64 word;
	__u32 owner_pid; /* known when the iterator found the socket first */
	__u16 lport;     /* kept for the close, like sock_state.lport */
	__u8 passive;    /* accepted from a listener */
	__u8 cloned;     /* started when cloned from the listener: SYN-ACK retransmits not yet added */
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

/*
 * The socket's address as a number: the verifier allows no arithmetic on
 * pointers, so the pointer's own value is copied out of the stack.
 */
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

static __always_inline struct sent_state *sent_lookup(const struct sock *sk)
{
	__u64 key = sent_key_of(sk);

	return bpf_map_lookup_elem(&sent_states, &key);
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

/* connect() picks the local port after SYN_SENT, and the close zeroes it: keep it when known. */
static __always_inline void sent_remember_port(struct sent_state *ss, const struct sock *sk)
{
	__u16 port = sock_lport(sk);

	if (port)
		ss->lport = port;
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

#endif /* __RETRANSMON_SENT_BPF_H */
