/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only) */
/*
 * The ABI between the BPF programs and the netlogger agent: every struct and
 * enum that crosses the kernel/user boundary, and nothing else.
 *
 * Rules for this file: fixed-width types only, largest fields first, explicit
 * padding (no hidden holes: the Python mirror in netlogger/kernel/abi.py reads
 * raw bytes), and a bump of NL_ABI_VERSION whenever a record layout changes.
 * tests/unit/test_abi.py checks the Python mirror against the BTF of the
 * compiled object, field by field, and every enum value by value (constants
 * Python needs too are enums for that reason: they appear in BTF).
 *
 * Address families: every `family` field in these structs holds AF_INET or
 * AF_INET6 (enum nl_family), the kernel's own values, never 4 or 6.
 */
#ifndef NETLOGGER_H
#define NETLOGGER_H

#include <linux/types.h>

#define NL_ABI_VERSION 2

#define NL_COMM_LEN 16
#define NL_MAX_LEVELS 32	 /* cgroup depths the enrollment lookup searches */
#define NL_MAX_PORT_RULES 16	 /* port rules per (policy, prefix) */

/* The values of AF_INET and AF_INET6. */
enum nl_family {
	NL_FAMILY_INET = 2,
	NL_FAMILY_INET6 = 10,
};

/* Destination ports that are DNS: only a policy's resolvers may be asked. */
enum nl_port {
	NL_PORT_DNS = 53,
	NL_PORT_DNS_TLS = 853, /* DNS over TLS */
};

/* Bits of an nl_cidr_key ahead of the address that a prefix always covers:
 * policy_id and family. A key's prefixlen is this plus the address prefix. */
enum nl_cidr_prefix {
	NL_CIDR_PREFIX_BITS = 40,
};

enum nl_op {
	NL_OP_CONNECT = 1,
	NL_OP_SENDMSG = 2,
	NL_OP_SOCK_CREATE = 3,
};

enum nl_action {
	NL_ACTION_ALLOWED = 0,
	NL_ACTION_DENIED = 1,
	NL_ACTION_BYPASSED = 2,
};

enum nl_mode {
	NL_MODE_ENFORCE = 0,
	NL_MODE_AUDIT = 1,
	NL_MODE_BYPASS = 2, /* reported only: bypass is an expiry, not a stored mode */
};

enum nl_reason {
	NL_REASON_RULE = 1,		     /* an allow rule matched */
	NL_REASON_DEFAULT_DENY = 2,	     /* no rule matched */
	NL_REASON_RAW_SOCKET = 3,	     /* SOCK_RAW in an inet family */
	NL_REASON_RESOLVER = 4,		     /* DNS to one of the policy's resolvers */
	NL_REASON_RESOLVER_NOT_ALLOWED = 5, /* DNS port to anything else */
	NL_REASON_ICMP = 6,		     /* ping socket, decided by the policy's icmp */
	NL_REASON_LOOPBACK = 7,		     /* loopback or unspecified address */
	NL_REASON_BYPASS = 8,		     /* inside a bypass window */
};

enum nl_flag {
	NL_FLAG_IPV6 = 1 << 0,	      /* the socket is AF_INET6 */
	NL_FLAG_IPV4_MAPPED = 1 << 1, /* ::ffff:a.b.c.d, decided as IPv4 */
	NL_FLAG_NAT64 = 1 << 2,	      /* 64:ff9b::/96, decided as IPv4 */
	NL_FLAG_NO_DST = 1 << 3,      /* socket creation: no destination */
	NL_FLAG_WOULD_DENY = 1 << 4,  /* the policy denies; audit or bypass let it pass */
};

enum nl_proto {
	NL_PROTO_TCP = 1 << 0,
	NL_PROTO_UDP = 1 << 1,
};

enum nl_policy_flag {
	NL_POLICY_LOG_LOOPBACK = 1 << 0,
	NL_POLICY_ICMP_ALLOW = 1 << 1,
};

/* Every ring record starts with this, so the decoder can dispatch and check. */
struct nl_hdr {
	__u8 op;      /* enum nl_op */
	__u8 version; /* NL_ABI_VERSION */
	__u16 size;   /* bytes in the whole record */
	__u32 cpu;
};

/* One egress decision of an enrolled cgroup. */
struct nl_event {
	struct nl_hdr hdr;
	__u64 ts_ns;	      /* CLOCK_BOOTTIME */
	__u64 seq;	      /* per enrolled cgroup, counts throttled and lost records too */
	__u64 cgroup_id;      /* the enrolled cgroup that decided */
	__u64 task_cgroup_id; /* the task's own cgroup (may be a descendant) */
	__u64 sock_cookie;
	__u32 pid; /* thread group id */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 rule_id;	 /* identity of the rule that decided, 0 when none */
	__u32 policy_id;
	__u8 daddr[16];	 /* as asked; IPv4 in the first four bytes */
	__u16 dport;	 /* host order */
	__u16 family;	 /* enum nl_family: the form daddr holds */
	__u16 sock_type; /* SOCK_STREAM, SOCK_DGRAM, SOCK_RAW */
	__u16 protocol;	 /* IPPROTO_* of the socket */
	__u8 action;	 /* enum nl_action */
	__u8 mode;	 /* enum nl_mode */
	__u8 reason;	 /* enum nl_reason */
	__u8 flags;	 /* enum nl_flag */
	__u8 pad[4];
	char comm[NL_COMM_LEN];
};

/* nl_enrollments: cgroup id -> how that cgroup is governed. Written by the agent. */
struct nl_enrollment {
	__u64 bypass_until_ns; /* CLOCK_BOOTTIME; the kernel ends the bypass, 0 = none */
	__u32 policy_id;
	__u8 mode;	       /* NL_MODE_ENFORCE or NL_MODE_AUDIT */
	__u8 pad[3];
};

/* nl_cgroup_state: cgroup id -> counters the programs keep. */
struct nl_cgroup_state {
	__u64 seq;	    /* next sequence number */
	__u64 tat_ns;	    /* token bucket (GCRA) theoretical arrival time */
	__u64 throttled;    /* allowed records dropped by the token bucket */
	__u64 ringbuf_lost; /* records lost because the ring was full */
};

/* nl_cpu_loss: per-CPU counters of what could not be recorded. */
struct nl_cpu_loss {
	__u64 ringbuf_lost; /* ring reserve failures */
	__u64 no_state;	    /* an enrolled cgroup without a state entry */
};

/* nl_policies: policy id -> policy-wide switches. */
struct nl_policy {
	__u32 flags; /* enum nl_policy_flag */
	__u32 pad;
};

/*
 * nl_cidrs (LPM trie): (policy, family, prefix) -> the port rules of that
 * prefix and of every shorter prefix that contains it, so the longest match
 * alone answers. The family byte keeps an IPv6 ::/0 from covering IPv4.
 */
struct nl_cidr_key {
	__u32 prefixlen; /* NL_CIDR_PREFIX_BITS + the address prefix length */
	__u32 policy_id;
	__u8 family; /* enum nl_family */
	__u8 addr[16];
	__u8 pad[3];
};

struct nl_port_rule {
	__u16 port_lo;
	__u16 port_hi;
	__u8 protos; /* enum nl_proto mask */
	__u8 pad[3];
	__u32 rule_id;
};

/*
 * Who wrote an nl_cidrs entry. Each writer replaces and deletes only its own
 * entries, so entries of one (DNS answers, say) survive another's rewrite (a
 * policy re-apply). Zero is the policy applier: an entry a writer forgot to tag
 * is the applier's to delete, so an untagged entry cannot outlive its policy.
 */
enum nl_writer {
	NL_WRITER_POLICY = 0,
};

struct nl_cidr_rules {
	__u32 count;
	__u32 writer; /* enum nl_writer */
	struct nl_port_rule rules[NL_MAX_PORT_RULES];
};

/* nl_resolvers: (policy, family, address) -> rule id of that resolver. */
struct nl_resolver_key {
	__u32 policy_id;
	__u8 family; /* enum nl_family */
	__u8 pad[3];
	__u8 addr[16];
};

/* nl_levels[0]: bit n set when some enrolled cgroup sits at depth n. */
struct nl_levels {
	__u32 mask;
	__u32 pad;
};

/*
 * nl_labels: cgroup id -> who an enrolled cgroup is. Only the agent reads it;
 * it is pinned with the rest so a restarted agent knows what it enrolled.
 */
struct nl_labels {
	__u32 level; /* depth in the cgroup v2 hierarchy */
	__u32 pad;
	char policy[32];
	char agent[64];
	char project[64];
	char container_id[72]; /* 64 hex digits and a NUL, padded to 8 bytes */
	char path[256];	       /* the cgroup directory, for people */
};

/*
 * nl_reported: cgroup id -> the losses the agent has already reported in gap
 * records that every durable sink has written, so a restarted agent reports
 * only what is new. Only the agent uses it. Each kind keeps the sequence its
 * last gap ended at: the next gap of that kind starts there, so a loss whose
 * counter moved after its sequence number was read still falls in a range.
 * Key 0 (no cgroup has that id) holds the losses not tied to a cgroup.
 */
struct nl_reported {
	__u64 throttled;
	__u64 ringbuf_lost;
	__u64 throttled_seq;	/* nl_cgroup_state.seq at the last throttled gap */
	__u64 ringbuf_lost_seq; /* nl_cgroup_state.seq at the last ringbuf_full gap */
	__u64 no_state;		/* key 0 only: nl_cpu_loss.no_state, summed over CPUs */
};

/*
 * nl_meta[0]: the layout (JSON) every pinned map was written with, so a newer
 * agent can tell a reusable map from one whose layout changed under it.
 */
struct nl_meta {
	__u32 abi_version;
	__u32 len;
	char layout[4088];
};

/* Loader-set constants (.rodata), fixed at load time. */
struct nl_config {
	__u64 allow_interval_ns;  /* 1e9 / allowed records per second per cgroup; 0 = no limit */
	__u64 allow_tolerance_ns; /* (burst - 1) * allow_interval_ns */
	__u64 wakeup_bytes;	  /* wake the agent once this much is waiting in the ring */
};

_Static_assert(NL_CIDR_PREFIX_BITS == 8 * (__builtin_offsetof(struct nl_cidr_key, addr) -
					   __builtin_offsetof(struct nl_cidr_key, policy_id)),
	       "a CIDR prefix covers policy_id and family before the address");

#endif /* NETLOGGER_H */
