// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * The policy match: loopback, the policy's resolvers, its CIDR rules and the
 * addresses its domain rules admitted. One global function, nl_decide, which
 * every deciding hook calls (decide.bpf.h).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "decide.bpf.h"
#include "maps.bpf.h"
#include "netlogger.h"

/* 127.0.0.0/8, 0.0.0.0, ::1 and :: all reach this host. */
static __always_inline int nl_is_local(const struct nl_dst *d)
{
	if (d->family == NL_FAMILY_INET)
		return (bpf_ntohl(d->match[0]) >> 24) == 127 || d->match[0] == 0;
	if (d->match[0] || d->match[1] || d->match[2])
		return 0;
	return d->match[3] == 0 || d->match[3] == bpf_htonl(1);
}

/* DNS is allowed to the policy's resolvers only. What else it was aimed at
 * says how it tried to get around them. */
static __always_inline void nl_match_resolver(__u32 policy_id, const struct nl_dst *d, __u8 proto,
					      struct nl_verdict *v)
{
	struct nl_resolver_key key = { .policy_id = policy_id, .family = d->family };
	__builtin_memcpy(key.addr, d->match, sizeof(key.addr));
	__u32 *rule_id = bpf_map_lookup_elem(&nl_resolvers, &key);
	if (rule_id) {
		v->action = NL_ACTION_ALLOWED;
		v->reason = NL_REASON_RESOLVER;
		v->rule_id = *rule_id;
		return;
	}
	v->action = NL_ACTION_DENIED;
	v->reason = d->port == NL_PORT_DNS_TLS ? NL_REASON_DNS_OVER_TLS :
		    proto == NL_PROTO_TCP	 ? NL_REASON_DNS_OVER_TCP :
						   NL_REASON_RESOLVER_NOT_ALLOWED;
}

/* The first port rule of `rules` that lets (port, proto) through decides. */
static __always_inline int nl_match_ports(const struct nl_cidr_rules *rules, __u16 port,
					  __u8 proto, struct nl_verdict *v)
{
#pragma unroll
	for (int i = 0; i < NL_MAX_PORT_RULES; i++) {
		if (i >= rules->count)
			break;
		const struct nl_port_rule *r = &rules->rules[i];
		if ((r->protos & proto) && port >= r->port_lo && port <= r->port_hi) {
			v->action = NL_ACTION_ALLOWED;
			v->reason = NL_REASON_RULE;
			v->rule_id = r->rule_id;
			return 1;
		}
	}
	return 0;
}

static __always_inline void nl_match_cidr(__u32 policy_id, const struct nl_dst *d, __u8 proto,
					  struct nl_verdict *v)
{
	struct nl_cidr_key key = {
		.prefixlen = NL_CIDR_PREFIX_BITS + (d->family == NL_FAMILY_INET ? 32 : 128),
		.policy_id = policy_id,
		.family = d->family,
	};
	__builtin_memcpy(key.addr, d->match, sizeof(key.addr));
	v->action = NL_ACTION_DENIED;
	v->reason = NL_REASON_DEFAULT_DENY;

	struct nl_cidr_rules *rules = bpf_map_lookup_elem(&nl_cidrs, &key);
	if (rules)
		nl_match_ports(rules, d->port, proto, v);
}

/* A destination a policy resolver gave this cgroup for a domain rule, while
 * the answer lives, is allowed on that rule's ports. One that no live answer
 * gave is unresolved; one resolved for other ports is a plain default deny. */
static __always_inline void nl_match_admitted(__u64 cgroup_id, __u32 policy_id,
					      const struct nl_dst *d, __u8 proto, __u64 now,
					      struct nl_verdict *v)
{
	v->reason = NL_REASON_UNRESOLVED_IP;
	void *addrs = bpf_map_lookup_elem(&nl_dns_admitted, &cgroup_id);
	if (!addrs)
		return;
	struct nl_dns_addr_key key = { .family = d->family };
	__builtin_memcpy(key.addr, d->match, sizeof(key.addr));
	struct nl_dns_slots *slots = bpf_map_lookup_elem(addrs, &key);
	if (!slots)
		return;
	for (int i = 0; i < NL_DNS_SLOTS; i++) {
		struct nl_dns_slot *slot = &slots->slot[i];
		if (!slot->match_id || slot->expires_ns <= now)
			continue;
		v->reason = NL_REASON_DEFAULT_DENY;
		struct nl_domain_ports_key pk = { .policy_id = policy_id, .match_id = slot->match_id };
		struct nl_cidr_rules *rules = bpf_map_lookup_elem(&nl_domain_ports, &pk);
		if (rules && nl_match_ports(rules, d->port, proto, v))
			return;
	}
}

/* The verifier treats a global function's pointer arguments as possibly NULL. */
__noinline __u64 nl_decide(__u64 cgroup_id, __u32 policy_id, const struct nl_dst *dst, __u8 proto,
			   __u64 now)
{
	if (!dst)
		return 0;
	struct nl_verdict verdict = {};
	struct nl_verdict *v = &verdict;
	if (nl_is_local(dst)) {
		if (!(nl_policy_flags(policy_id) & NL_POLICY_LOG_LOOPBACK))
			return 0;
		v->action = NL_ACTION_ALLOWED;
		v->reason = NL_REASON_LOOPBACK;
	} else if (dst->port == NL_PORT_DNS || dst->port == NL_PORT_DNS_TLS) {
		nl_match_resolver(policy_id, dst, proto, v);
	} else {
		nl_match_cidr(policy_id, dst, proto, v);
		if (v->action == NL_ACTION_DENIED &&
		    (nl_policy_flags(policy_id) & NL_POLICY_HAS_DOMAINS))
			nl_match_admitted(cgroup_id, policy_id, dst, proto, now, v);
	}
	return NL_DECIDED | (__u64)v->rule_id << 32 | (__u64)v->reason << 8 | v->action;
}
