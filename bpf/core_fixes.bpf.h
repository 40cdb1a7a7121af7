/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The classic tracepoints' records, as each kernel lays them out. The ___x
 * flavours carry only the fields read here (preserve_access_index: CO-RE
 * finds them by name), and bpf_core_type_exists()/bpf_core_field_exists()
 * pick the layout of the running kernel.
 */
#ifndef __RETRANSMON_CORE_FIXES_BPF_H
#define __RETRANSMON_CORE_FIXES_BPF_H

#include "common.bpf.h"

/*
 * Kernel 6.17+: commit ad892e912b84 ("tcp: trace retransmit failures in
 * tcp_retransmit_skb") made tcp_retransmit_skb a TRACE_EVENT of its own,
 * with an `err` field: a failed attempt fires too (before, only err 0 did).
 */
struct trace_event_raw_tcp_retransmit_skb___x {
	const void *skbaddr;
	const void *skaddr;
	int err;
} __attribute__((preserve_access_index));

/* Before 6.17: a DEFINE_EVENT of the tcp_event_sk_skb class (since 4.15). */
struct trace_event_raw_tcp_event_sk_skb___x {
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));

/* Unchanged since the tracepoint was added (4.15). */
struct trace_event_raw_tcp_retransmit_synack___x {
	const void *skaddr;
	const void *req;
} __attribute__((preserve_access_index));

/* The tcp_retransmit_skb record's socket, skb and error (0 before 6.17), on any kernel. */
static __always_inline void tp_retransmit_skb_args(void *ctx, const struct sock **sk, const struct sk_buff **skb,
						   int *err)
{
	*err = 0;
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb___x)) {
		struct trace_event_raw_tcp_retransmit_skb___x *args = ctx;

		*skb = args->skbaddr;
		*sk = args->skaddr;
		if (bpf_core_field_exists(args->err))
			*err = args->err;
	} else {
		struct trace_event_raw_tcp_event_sk_skb___x *args = ctx;

		*skb = args->skbaddr;
		*sk = args->skaddr;
	}
}

#endif /* __RETRANSMON_CORE_FIXES_BPF_H */
