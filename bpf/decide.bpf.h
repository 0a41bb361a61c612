/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only) */
/*
 * Who is enrolled, and what their policy says about a destination.
 * Shared by every hook; emits through emit.bpf.h.
 */
#ifndef NETLOGGER_DECIDE_BPF_H
#define NETLOGGER_DECIDE_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "emit.bpf.h"
#include "maps.bpf.h"
#include "netlogger.h"

#define NL_SOCK_STREAM 1
#define NL_SOCK_DGRAM 2
#define NL_SOCK_RAW 3
#define NL_IPPROTO_ICMP 1
#define NL_IPPROTO_ICMPV6 58

/* The nearest enrolled ancestor of a cgroup (itself included): a task that
 * moves into a child cgroup stays governed. The cgroup is the current task's,
 * or with an skb, that of the socket it belongs to (ingress runs in softirq,
 * where the current task is anyone's). Only the depths where something is
 * enrolled are probed, so a cgroup that is not enrolled usually costs one
 * helper call and one hash miss. */
static __always_inline struct nl_enrollment *nl_enrollment_of(struct __sk_buff *skb,
							      __u64 *cgroup_id)
{
	__u32 zero = 0;
	struct nl_levels *levels = bpf_map_lookup_elem(&nl_levels, &zero);
	if (!levels || !levels->mask)
		return 0;
	__u32 mask = levels->mask;

#pragma unroll
	for (int level = NL_MAX_LEVELS - 1; level >= 0; level--) {
		if (!(mask & (1u << level)))
			continue;
		__u64 id = skb ? bpf_skb_ancestor_cgroup_id(skb, level) :
				 bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue; /* the cgroup sits shallower than this depth */
		struct nl_enrollment *en = bpf_map_lookup_elem(&nl_enrollments, &id);
		if (en) {
			*cgroup_id = id;
			return en;
		}
	}
	return 0;
}

static __always_inline struct nl_enrollment *nl_find_enrollment(__u64 *cgroup_id)
{
	return nl_enrollment_of(0, cgroup_id);
}

static __always_inline __u32 nl_policy_flags(__u32 policy_id)
{
	struct nl_policy *p = bpf_map_lookup_elem(&nl_policies, &policy_id);
	return p ? p->flags : 0; /* an unknown policy allows nothing */
}

static __always_inline void nl_dst_from_ip4(struct nl_dst *d, __u32 ip4, __u32 port)
{
	d->asked[0] = ip4;
	d->asked_family = NL_FAMILY_INET;
	d->match[0] = ip4;
	d->family = NL_FAMILY_INET;
	d->port = bpf_ntohs((__u16)port);
}

/* IPv4-mapped and NAT64 addresses are decided as the IPv4 address they
 * carry, so a dual-stack socket cannot reach what IPv4 rules deny. */
static __always_inline void nl_dst_from_ip6(struct nl_dst *d, const __u32 ip6[4], __u32 port)
{
	d->asked[0] = ip6[0];
	d->asked[1] = ip6[1];
	d->asked[2] = ip6[2];
	d->asked[3] = ip6[3];
	d->asked_family = NL_FAMILY_INET6;
	d->port = bpf_ntohs((__u16)port);
	if (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff)) {
		d->family = NL_FAMILY_INET;
		d->flags = NL_FLAG_IPV4_MAPPED;
		d->match[0] = ip6[3];
	} else if (ip6[0] == bpf_htonl(0x0064ff9b) && ip6[1] == 0 && ip6[2] == 0) {
		d->family = NL_FAMILY_INET;
		d->flags = NL_FLAG_NAT64;
		d->match[0] = ip6[3];
	} else {
		d->family = NL_FAMILY_INET6;
		d->match[0] = ip6[0];
		d->match[1] = ip6[1];
		d->match[2] = ip6[2];
		d->match[3] = ip6[3];
	}
}

/* Audit lets a deny pass; a bypass window lets everything pass. Both keep
 * the policy's opinion in NL_FLAG_WOULD_DENY. The kernel clock ends a bypass,
 * so an agent that died cannot leave one open. */
static __always_inline void nl_apply_mode(const struct nl_enrollment *en, __u64 now,
					  struct nl_verdict *v)
{
	if (v->action == NL_ACTION_DENIED && (en->mode == NL_MODE_AUDIT || now < en->bypass_until_ns))
		v->flags |= NL_FLAG_WOULD_DENY;
	if (now < en->bypass_until_ns) {
		v->action = NL_ACTION_BYPASSED;
		v->reason = NL_REASON_BYPASS;
		v->mode = NL_MODE_BYPASS;
	} else if (en->mode == NL_MODE_AUDIT && v->action == NL_ACTION_DENIED) {
		v->action = NL_ACTION_ALLOWED;
	}
}

/* A socket that talks to port 53 is a DNS socket: remember it, so the egress
 * hook knows its queries even after a NAT moved them to another port. */
static __always_inline void nl_mark_dns_socket(__u64 cookie)
{
	__u8 one = 1;
	bpf_map_update_elem(&nl_dns_socks, &cookie, &one, BPF_ANY);
}

/* What the policy says about a destination (decide.bpf.c), in one scalar:
 * a global function's result is all the verifier carries back from it, and
 * a global function is verified once per program, not once per path of its
 * caller. NL_DECIDED, the enum nl_action in bits 0-7, the enum nl_reason in
 * bits 8-15, the rule id in bits 32-63; 0 when there is nothing to decide or
 * record (loopback, unless the policy logs it). `proto` is the enum nl_proto
 * bit the destination is reached with, 0 for neither. */
#define NL_DECIDED (1ULL << 16)
__u64 nl_decide(__u64 cgroup_id, __u32 policy_id, const struct nl_dst *dst, __u8 proto, __u64 now);

/* nl_decide, unpacked into `v`; 0 when there is nothing to record. Shared by
 * the socket hooks and the container backstop. */
static __always_inline int nl_decide_dst(__u64 cgroup_id, __u32 policy_id,
					 const struct nl_dst *dst, __u8 proto, __u64 now,
					 struct nl_verdict *v)
{
	__u64 r = nl_decide(cgroup_id, policy_id, dst, proto, now);
	if (!(r & NL_DECIDED))
		return 0;
	v->action = (__u8)r;
	v->reason = (__u8)(r >> 8);
	v->rule_id = r >> 32;
	return 1;
}

/* connect4/6 and sendmsg4/6: decide, record, and return the hook's verdict. */
static __always_inline int nl_decide_addr(struct bpf_sock_addr *ctx, __u8 op, struct nl_dst *dst)
{
	__u64 cgroup_id;
	struct nl_enrollment *en = nl_find_enrollment(&cgroup_id);
	if (!en)
		return 1;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (dst->port == NL_PORT_DNS)
		nl_mark_dns_socket(cookie);

	__u32 type = ctx->type;
	__u8 proto = type == NL_SOCK_STREAM ? NL_PROTO_TCP : type == NL_SOCK_DGRAM ? NL_PROTO_UDP : 0;
	__u64 now = bpf_ktime_get_boot_ns();
	struct nl_verdict v = { .policy_id = en->policy_id, .mode = en->mode };
	if (!nl_decide_dst(cgroup_id, en->policy_id, dst, proto, now, &v))
		return 1;

	nl_apply_mode(en, now, &v);

	struct nl_subject subj = {
		.cgroup_id = cgroup_id,
		.sock_cookie = cookie,
		.sock_type = type,
		.protocol = ctx->protocol,
		.op = op,
	};
	if (ctx->family == NL_FAMILY_INET6) {
		dst->flags |= NL_FLAG_IPV6;
		/* A v4-mapped sendmsg on an IPv6 socket reaches the sendmsg4 hook. */
		if (dst->asked_family == NL_FAMILY_INET)
			dst->flags |= NL_FLAG_IPV4_MAPPED;
	}
	if (op == NL_OP_CONNECT && type == NL_SOCK_DGRAM)
		dst->flags |= NL_FLAG_UDP_CONNECT;
	nl_emit(&subj, dst, &v, now);
	return v.action != NL_ACTION_DENIED;
}

#endif /* NETLOGGER_DECIDE_BPF_H */
