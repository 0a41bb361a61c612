/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only) */
/*
 * The one place a decision becomes a ring record. Every decision of an
 * enrolled cgroup takes a sequence number first, so the agent can prove what
 * it missed: each one is either submitted, or counted as throttled, or counted
 * as lost to a full ring.
 */
#ifndef NETLOGGER_EMIT_BPF_H
#define NETLOGGER_EMIT_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.bpf.h"

/* Ring bytes one record takes: its 8-byte header and the record, 8-aligned. */
#define NL_RECORD_SPAN ((sizeof(struct nl_event) + 8 + 7) & ~7UL)

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

/* Takes the record's sequence number first, then a ring slot holding the
 * decision; 0 when the record is counted as throttled or lost instead.
 * `limited`: whether the token bucket may drop it. The task fields are zero
 * here: only hooks that run in the task's context (nl_emit) know them. */
static __always_inline struct nl_event *nl_reserve(const struct nl_subject *subj,
						   const struct nl_dst *dst,
						   const struct nl_verdict *v, __u64 now,
						   int limited)
{
	struct nl_cgroup_state *st = nl_state_of(subj->cgroup_id);
	if (!st) {
		struct nl_cpu_loss *loss = nl_cpu_loss_slot();
		if (loss)
			loss->no_state++;
		return 0;
	}
	__u64 seq = __sync_fetch_and_add(&st->seq, 1);
	if (limited && !nl_take_token(&st->tat_ns, now)) {
		__sync_fetch_and_add(&st->throttled, 1);
		return 0;
	}

	struct nl_event *e = bpf_ringbuf_reserve(&nl_events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&st->ringbuf_lost, 1);
		struct nl_cpu_loss *loss = nl_cpu_loss_slot();
		if (loss)
			loss->ringbuf_lost++;
		return 0;
	}
	e->hdr.op = subj->op;
	e->hdr.version = NL_ABI_VERSION;
	e->hdr.size = sizeof(*e);
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->ts_ns = now;
	e->seq = seq;
	e->cgroup_id = subj->cgroup_id;
	e->task_cgroup_id = 0;
	e->sock_cookie = subj->sock_cookie;
	e->pid = 0;
	e->tid = 0;
	e->uid = 0;
	e->gid = 0;
	e->rule_id = v->rule_id;
	e->policy_id = v->policy_id;
	__builtin_memcpy(e->daddr, dst->asked, sizeof(e->daddr));
	e->dport = dst->port;
	e->family = dst->asked_family;
	e->sock_type = subj->sock_type;
	e->protocol = subj->protocol;
	e->action = v->action;
	e->mode = v->mode;
	e->reason = v->reason;
	e->flags = v->flags | dst->flags;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	__builtin_memset(e->comm, 0, sizeof(e->comm));
	return e;
}

static __always_inline void nl_submit(struct nl_event *e)
{
	/* A wakeup is an IPI: it costs several times the record (3 us measured in
	 * a VM). Wake the agent only when this record makes the waiting data cross
	 * the threshold; the agent polls on a short timeout for everything else. */
	__u64 waiting = bpf_ringbuf_query(&nl_events, BPF_RB_AVAIL_DATA);
	__u64 crossing = waiting >= nl_cfg.wakeup_bytes &&
			 waiting - NL_RECORD_SPAN < nl_cfg.wakeup_bytes;
	bpf_ringbuf_submit(e, crossing ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* A decision made in the deciding task's context: the record names the task. */
static __always_inline void nl_emit(const struct nl_subject *subj, const struct nl_dst *dst,
				    const struct nl_verdict *v, __u64 now)
{
	/* Only plain allowed records are throttled: denies, bypasses and
	 * audit would-denies are the records someone will look for. */
	int plain_allow = v->action == NL_ACTION_ALLOWED && !(v->flags & NL_FLAG_WOULD_DENY);
	struct nl_event *e = nl_reserve(subj, dst, v, now, plain_allow);
	if (!e)
		return;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	e->task_cgroup_id = bpf_get_current_cgroup_id();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	nl_submit(e);
}

#endif /* NETLOGGER_EMIT_BPF_H */
