/* SPDX-License-Identifier: GPL-2.0 */
/* Listening ports per namespace: the service_port label, and the owner accepted sockets inherit. */
#ifndef __RETRANSMON_LISTENERS_BPF_H
#define __RETRANSMON_LISTENERS_BPF_H

#include "common.bpf.h"
#include "sock.bpf.h"
#include "sock_state.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct listen_key);
	__type(value, struct listen_info);
} listeners SEC(".maps");

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

#endif /* __RETRANSMON_LISTENERS_BPF_H */
