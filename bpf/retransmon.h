/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the kernel side (retransmon.bpf.c) and user space
 * (src/retransmon/kernel/structs.py). Plain __u* fields only, explicit
 * padding, so both sides agree on every offset; a unit test checks the
 * Python mirrors against the BTF of the compiled object.
 */
#ifndef __RETRANSMON_H
#define __RETRANSMON_H

/* flow_key.kind */
#define RM_KIND_RETRANSMIT 0 /* data, SYN or FIN segment retransmitted */
#define RM_KIND_SYNACK 1     /* SYN-ACK retransmitted for a request socket */
#define RM_KIND_SENT 2       /* segments sent (the rate's denominator) */

/* flow_key.flags */
#define RM_FLOW_COARSE 0x1  /* map was full: addresses and ports zeroed */
#define RM_FLOW_PASSIVE 0x2 /* this host accepted the connection: lport is the service */
#define RM_FLOW_META 0x80  /* the per-table bookkeeping entry, not a flow */

/*
 * flow_key.cause, retrans_event.cause: why the kernel retransmitted. Each maps
 * onto the TcpExt counter it must equal per namespace (docs/counting.md).
 */
#define RM_CAUSE_NONE 0       /* segments sent (kind sent): no cause */
#define RM_CAUSE_FAST 1       /* retransmit queue outside Loss: TCPFastRetrans */
#define RM_CAUSE_SLOW_START 2 /* retransmit queue in Loss (after a timeout): TCPSlowStartRetrans */
#define RM_CAUSE_TIMEOUT 3    /* the RTO timer's own retransmit; also what no other cause claims */
#define RM_CAUSE_TLP 4        /* a tail loss probe that retransmits */
#define RM_CAUSE_SYN 5        /* SYN and SYN-ACK retransmits: TCPSynRetrans */

/* retrans_event.flags */
#define RM_EVENT_RECONCILED 0x1 /* segments whose own event was missed, found at close */

#define RM_COMM_LEN 16

/* One retransmitting flow as the kernel saw it, in one harvest interval. */
struct flow_key {
	__u64 cgroup; /* cgroup v2 id of the socket's owner, 0 if unknown */
	__u32 netns;  /* network namespace inode number */
	__u16 family; /* AF_INET or AF_INET6 */
	__u8 state;   /* TCP state (TCP_ESTABLISHED = 1, ...) */
	__u8 kind;    /* RM_KIND_* */
	__u16 lport;  /* local port, host byte order */
	__u16 rport;  /* remote port, host byte order */
	__u8 flags;   /* RM_FLOW_* */
	__u8 cause;   /* RM_CAUSE_* */
	__u8 pad[2];
	__u8 laddr[16]; /* local address; IPv4 in the first 4 bytes */
	__u8 raddr[16]; /* remote address */
};

struct flow_counts {
	__u64 events;   /* retransmit events (skbs); entries count for the meta entry */
	__u64 segments; /* segments, the unit of the kernel's RetransSegs */
};

/* One retransmit, for `trace` and `top`; written only while a reader is attached. */
struct retrans_event {
	__u64 ts_ns;  /* bpf_ktime_get_boot_ns() */
	__u64 cgroup;
	__u32 netns;
	__u32 pid; /* owner process (tgid), 0 if unknown */
	__u32 segments;
	__u16 family;
	__u8 state;
	__u8 kind;
	__u16 lport;
	__u16 rport;
	__u8 flags; /* RM_EVENT_* */
	__u8 cause; /* RM_CAUSE_* */
	__u8 backoff; /* the socket's RTO backoff exponent (icsk_backoff) */
	__u8 pad;
	__u32 srtt_us; /* smoothed RTT, microseconds */
	__u32 rto_ms;  /* retransmission timeout, milliseconds (0 if the kernel's HZ is unknown) */
	char comm[RM_COMM_LEN]; /* owner command name, empty if unknown */
	__u8 laddr[16];
	__u8 raddr[16];
};

/* A listening port in a network namespace. */
struct listen_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

struct listen_info {
	__u32 sockets;   /* listening sockets on this port (SO_REUSEPORT) */
	__u32 owner_pid; /* the last process to listen() on it */
	char owner_comm[RM_COMM_LEN];
};

/* Settings user space may change while programs run (array map, one entry). */
struct runtime_settings {
	__u32 events_wanted; /* nonzero while trace/top reads the ring buffer */
	__u32 pad;
};

/* Ring buffer records that could not be reserved, flow updates and sockets with no room. */
struct loss_counts {
	__u64 events_lost;        /* ring buffer full */
	__u64 unaccounted_events; /* flow table and coarse reserve both full */
	__u64 unaccounted_segments;
	__u64 untracked_sockets; /* socket table full: their sent segments are not counted */
	__u64 unclassified_segments; /* found at close or caught up: counted with cause timeout */
};

#endif /* __RETRANSMON_H */
