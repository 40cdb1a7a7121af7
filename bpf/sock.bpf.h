/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Socket readers and flow-key builders. Hooks that get typed pointers (tp_btf,
 * the iterator) load fields directly: one instruction each, checked by the
 * verifier. The classic tracepoints get plain addresses, which only
 * bpf_probe_read_kernel() may read: a helper call per field, several times
 * slower. The readers used by both take `probed` (a constant at each call
 * site, so only one way is compiled in) instead of being written twice.
 */
#ifndef __RETRANSMON_SOCK_BPF_H
#define __RETRANSMON_SOCK_BPF_H

#include "common.bpf.h"

/* src->a->b...: a direct load, or BPF_CORE_READ() when src is a plain address. */
#define READ_KERN(probed, src, a, ...) \
	((probed) ? BPF_CORE_READ(src, a, ##__VA_ARGS__) : ___arrow(src, a, ##__VA_ARGS__))

static __always_inline __u64 sock_cgroup_id(const struct sock *sk, bool probed)
{
	if (!has_sk_cgroup)
		return 0;
	return READ_KERN(probed, sk, sk_cgrp_data.cgroup, kn, id);
}

static __always_inline __u32 skb_segments(const struct sk_buff *skb, bool probed)
{
	const struct tcp_skb_cb *cb = (const struct tcp_skb_cb *)&skb->cb[0];
	__u16 segs = READ_KERN(probed, cb, tcp_gso_segs);

	return segs ? segs : 1;
}

/* The hooks' own socket (a trusted pointer) seen as the tcp_sock it is. */
static __always_inline __u32 sock_total_retrans(const struct sock *sk)
{
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

	return tp ? tp->total_retrans : 0;
}

/*
 * Probed: the iterator's socket pointer may be untrusted, which
 * bpf_skc_to_tcp_sock() refuses, and the verifier knows it only as a struct
 * sock, too small for a direct load at segs_out's offset.
 */
static __always_inline __u32 sock_segs_out(const struct sock *sk)
{
	return BPF_CORE_READ((const struct tcp_sock *)sk, segs_out);
}

static __always_inline __u16 sock_lport(const struct sock *sk)
{
	return sk->__sk_common.skc_num;
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

static __always_inline void read_v6(__u8 *dst, const struct in6_addr *src, bool probed)
{
	__u32 *d = (__u32 *)dst;

	if (probed) {
		bpf_core_read(dst, sizeof(src->in6_u.u6_addr8), &src->in6_u.u6_addr8);
		return;
	}
	d[0] = src->in6_u.u6_addr32[0];
	d[1] = src->in6_u.u6_addr32[1];
	d[2] = src->in6_u.u6_addr32[2];
	d[3] = src->in6_u.u6_addr32[3];
}

/* Fill addresses, ports, family and netns from a socket or request socket. */
static __always_inline void key_from_common(struct flow_key *key, const struct sock_common *skc, bool probed)
{
	key->netns = READ_KERN(probed, skc, skc_net.net, ns.inum);
	key->family = READ_KERN(probed, skc, skc_family);
	key->lport = READ_KERN(probed, skc, skc_num);
	key->rport = bpf_ntohs(READ_KERN(probed, skc, skc_dport));
	if (key->family == AF_INET6) {
		read_v6(key->laddr, &skc->skc_v6_rcv_saddr, probed);
		read_v6(key->raddr, &skc->skc_v6_daddr, probed);
		unmap_if_v4_mapped(key);
	} else {
		*(__u32 *)key->laddr = READ_KERN(probed, skc, skc_rcv_saddr);
		*(__u32 *)key->raddr = READ_KERN(probed, skc, skc_daddr);
	}
}

/* The flow key of a full socket (typed pointer): its addresses and cgroup; lport if the kernel has unbound it. */
static __always_inline void key_for_sock(struct flow_key *key, const struct sock *sk, __u16 lport, bool passive)
{
	key_from_common(key, &sk->__sk_common, false);
	key->cgroup = sock_cgroup_id(sk, false);
	if (!key->lport)
		key->lport = lport; /* at TCP_CLOSE inet_put_port() has zeroed it */
	if (passive)
		key->flags |= RM_FLOW_PASSIVE;
}

/* A SYN-ACK a listener sends for a request socket: keyed by the request, owned by the listener's cgroup. */
static __always_inline void key_for_request(struct flow_key *key, const struct sock *listener,
					    const struct request_sock *req, bool probed)
{
	key_from_common(key, &req->__req_common, probed);
	key->state = TCP_SYN_RECV;
	key->kind = RM_KIND_SYNACK;
	key->flags = RM_FLOW_PASSIVE;
	key->cgroup = sock_cgroup_id(listener, probed);
}

static __always_inline void listen_key_of(struct listen_key *lk, const struct sock *sk)
{
	lk->netns = sk->__sk_common.skc_net.net->ns.inum;
	lk->port = sk->__sk_common.skc_num;
	lk->pad = 0;
}

#endif /* __RETRANSMON_SOCK_BPF_H */
