/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Why the kernel retransmitted: the cause label, decided where the kernel
 * decides which TcpExt counter to raise (docs/counting.md has the table).
 */
#ifndef __RETRANSMON_CAUSE_BPF_H
#define __RETRANSMON_CAUSE_BPF_H

#include "common.bpf.h"
#include "flows.bpf.h"
#include "sock_state.bpf.h"

/* include/net/inet_connection_sock.h and tcp.h: defines, so not in BTF; stable since 4.x. */
#define ICSK_TIME_LOSS_PROBE 5
#define TCPHDR_SYN 0x02

/*
 * At tcp_retransmit_skb, on the socket the tracepoint names (under its lock):
 *   - a SYN: __tcp_retransmit_skb() raises TCPSynRetrans with RetransSegs,
 *     whoever called it (SYN-ACKs have a tracepoint of their own);
 *   - icsk_pending 0: the write timer handler clears it just before
 *     tcp_retransmit_timer(), whose retransmit this is; the retransmit queue
 *     always runs with a timer armed (it has segments out);
 *   - a refused send (err): tcp_xmit_retransmit_queue() adds only successful
 *     sends to its counters, so it is in RetransSegs alone, like the timer's;
 *   - the Loss state: the queue after a timeout, TCPSlowStartRetrans;
 *   - icsk_pending LOSS_PROBE in the Open state: tcp_send_loss_probe(), run
 *     by the timer with icsk_pending still set (the queue has nothing lost
 *     in Open);
 *   - anything else is the queue in Recovery (or Disorder, CWR): TCPFastRetrans.
 */
static __always_inline __u8 retransmit_cause(const struct tcp_sock *tp, const struct sk_buff *skb, int err)
{
	const struct tcp_skb_cb *cb;
	__u8 pending, ca_state;

	if (!skb)
		return RM_CAUSE_SYN; /* a passive Fast Open socket's own SYN-ACK */
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

/* Classic tracepoints: no typed socket. SYNs are `syn`, every other retransmit `fast` (documented). */
static __always_inline __u8 retransmit_cause_probed(const struct sk_buff *skb)
{
	const struct tcp_skb_cb *cb = (const struct tcp_skb_cb *)&skb->cb[0];

	return BPF_CORE_READ(cb, tcp_flags) & TCPHDR_SYN ? RM_CAUSE_SYN : RM_CAUSE_FAST;
}

/* Segments whose cause cannot be known (a skipped run's, caught up or found at close): `timeout`. */
static __always_inline void account_unclassified(struct flow_key *key, __u32 segments)
{
	struct loss_counts *lost = loss_slot();

	key->cause = RM_CAUSE_TIMEOUT;
	account(key, 0, segments);
	if (lost)
		lost->unclassified_segments += segments;
}

#endif /* __RETRANSMON_CAUSE_BPF_H */
