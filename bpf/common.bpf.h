/* SPDX-License-Identifier: GPL-2.0 */
/* What every part of the kernel side shares: includes, load-time settings and the loss counters. */
#ifndef __RETRANSMON_COMMON_BPF_H
#define __RETRANSMON_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "retransmon.h"

#define AF_INET 2
#define AF_INET6 10

/* Set by user space before load. */
const volatile bool has_err_arg = false;    /* tcp_retransmit_skb(sk, skb, err) */
const volatile bool use_sk_storage = true;  /* exact per-socket accounting */
const volatile bool has_sk_cgroup = true;   /* sock_cgroup_data.cgroup exists */
const volatile __u32 flow_capacity = 16384; /* full flows per table, then coarse keys */
const volatile bool count_flows = true;     /* false for trace and top: nobody drains the tables */

/* The kernel's HZ, for the RTO in milliseconds; 0 (weak) when libbpf cannot read the kernel config. */
extern unsigned int CONFIG_HZ __kconfig __weak;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loss_counts);
} losses SEC(".maps");

static __always_inline struct loss_counts *loss_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&losses, &zero);
}

#endif /* __RETRANSMON_COMMON_BPF_H */
