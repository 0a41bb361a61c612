/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only) */
/*
 * What a hook hands the emitters (emit.bpf.c): the destination, the socket
 * and the verdict; and the per-cgroup state and token bucket the DNS parser
 * shares with them.
 */
#ifndef NETLOGGER_EMIT_BPF_H
#define NETLOGGER_EMIT_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.bpf.h"

/* The destination as the workload asked for it, and the form policy matches. */
struct nl_dst {
	__u32 asked[4];	 /* as passed to connect/sendmsg, network order */
	__u32 match[4];	 /* IPv4 in match[0] when family is NL_FAMILY_INET */
	__u16 port;	 /* host order */
	__u16 asked_family; /* enum nl_family: the form of `asked` */
	__u8 family;	 /* enum nl_family: the family the policy decides in */
	__u8 flags;	 /* enum nl_flag */
};

/* What the hook knows about the socket and the task. */
struct nl_subject {
	__u64 cgroup_id; /* enrolled cgroup */
	__u64 sock_cookie;
	__u16 sock_type;
	__u16 protocol;
	__u8 op;
};

struct nl_verdict {
	__u32 rule_id;
	__u32 policy_id;
	__u8 action;
	__u8 mode;
	__u8 reason;
	__u8 flags;
};

static __always_inline struct nl_cgroup_state *nl_state_of(__u64 cgroup_id)
{
	struct nl_cgroup_state *st = bpf_map_lookup_elem(&nl_cgroup_state, &cgroup_id);
	if (st)
		return st;
	/* The agent creates the entry on enroll; this covers a race with it. */
	struct nl_cgroup_state zero = {};
	bpf_map_update_elem(&nl_cgroup_state, &cgroup_id, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&nl_cgroup_state, &cgroup_id);
}

static __always_inline struct nl_cpu_loss *nl_cpu_loss_slot(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&nl_cpu_loss, &zero);
}

/* Generic cell rate algorithm: one timestamp per cgroup, no lock. Concurrent
 * CPUs may let a few extra records through; the accounting stays exact. */
static __always_inline int nl_take_token(__u64 *tat_ns, __u64 now)
{
	__u64 interval = nl_cfg.allow_interval_ns;
	if (!interval)
		return 1;
	__u64 tat = *tat_ns;
	if (tat < now)
		tat = now;
	if (tat - now > nl_cfg.allow_tolerance_ns)
		return 0;
	*tat_ns = tat + interval;
	return 1;
}

/* The emitters (emit.bpf.c). Global functions: the verifier checks each
 * once per program that calls it, with the verdict unknown, instead of once
 * for every verdict path of its caller times every path through the fold.
 * Inlined, that product took 6.1's verifier past its 1M-instruction budget.
 * Their result means nothing: 6.1 takes only global functions that return a
 * scalar. */

/* A decision made in the deciding task's context: the record names the task. */
int nl_emit(const struct nl_subject *subj, const struct nl_dst *dst, const struct nl_verdict *v,
	    __u64 now);

/* A decision made outside any task (tc): the record names the cgroup only,
 * and goes through the cgroup's token bucket whatever its verdict. */
int nl_emit_packet(const struct nl_subject *subj, const struct nl_dst *dst,
		   const struct nl_verdict *v, __u64 now);

#endif /* NETLOGGER_EMIT_BPF_H */
