// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * Socket creation: raw inet sockets are denied; ping sockets follow the
 * policy's icmp switch. Ordinary TCP/UDP sockets are decided at
 * connect/sendmsg (sock_addr.bpf.c), not here. This hook only runs for inet
 * families: AF_PACKET is out of its reach.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "decide.bpf.h"

SEC("cgroup/sock_create")
int nl_sock_create(struct bpf_sock *ctx)
{
	__u32 family = ctx->family, type = ctx->type, protocol = ctx->protocol;
	int raw = type == NL_SOCK_RAW;
	int ping = type == NL_SOCK_DGRAM &&
		   ((family == NL_FAMILY_INET && protocol == NL_IPPROTO_ICMP) ||
		    (family == NL_FAMILY_INET6 && protocol == NL_IPPROTO_ICMPV6));
	if (!raw && !ping)
		return 1;

	__u64 cgroup_id;
	struct nl_enrollment *en = nl_find_enrollment(&cgroup_id);
	if (!en)
		return 1;

	struct nl_verdict v = { .policy_id = en->policy_id, .mode = en->mode };
	v.reason = raw ? NL_REASON_RAW_SOCKET : NL_REASON_ICMP;
	v.action = !raw && (nl_policy_flags(en->policy_id) & NL_POLICY_ICMP_ALLOW) ?
			   NL_ACTION_ALLOWED :
			   NL_ACTION_DENIED;

	__u64 now = bpf_ktime_get_boot_ns();
	nl_apply_mode(en, now, &v);

	struct nl_dst dst = { .flags = NL_FLAG_NO_DST, .asked_family = family };
	if (family == NL_FAMILY_INET6)
		dst.flags |= NL_FLAG_IPV6;
	struct nl_subject subj = {
		.cgroup_id = cgroup_id,
		.sock_cookie = bpf_get_socket_cookie(ctx),
		.sock_type = type,
		.protocol = protocol,
		.op = NL_OP_SOCK_CREATE,
	};
	nl_emit(&subj, &dst, &v, now);
	return v.action != NL_ACTION_DENIED;
}
