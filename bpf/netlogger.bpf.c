// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * netlogger's cgroup hooks. They attach once to a scope cgroup; a cgroup is
 * governed when it (or an ancestor) is in nl_enrollments. Returning 0 from
 * these hooks makes the syscall fail with EPERM.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "decide.bpf.h"

SEC("cgroup/connect4")
int nl_connect4(struct bpf_sock_addr *ctx)
{
	struct nl_dst dst = {};
	nl_dst_from_ip4(&dst, ctx->user_ip4, ctx->user_port);
	return nl_decide_addr(ctx, NL_OP_CONNECT, &dst);
}

SEC("cgroup/connect6")
int nl_connect6(struct bpf_sock_addr *ctx)
{
	struct nl_dst dst = {};
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	nl_dst_from_ip6(&dst, ip6, ctx->user_port);
	return nl_decide_addr(ctx, NL_OP_CONNECT, &dst);
}

SEC("cgroup/sendmsg4")
int nl_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct nl_dst dst = {};
	nl_dst_from_ip4(&dst, ctx->user_ip4, ctx->user_port);
	return nl_decide_addr(ctx, NL_OP_SENDMSG, &dst);
}

SEC("cgroup/sendmsg6")
int nl_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct nl_dst dst = {};
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	nl_dst_from_ip6(&dst, ip6, ctx->user_port);
	return nl_decide_addr(ctx, NL_OP_SENDMSG, &dst);
}

/* Raw inet sockets are denied; ping sockets follow the policy's icmp switch.
 * Ordinary TCP/UDP sockets are decided at connect/sendmsg, not here. This
 * hook only runs for inet families: AF_PACKET is out of its reach. */
SEC("cgroup/sock_create")
int nl_sock_create(struct bpf_sock *ctx)
{
	__u32 family = ctx->family, type = ctx->type, protocol = ctx->protocol;
	int raw = type == NL_SOCK_RAW;
	int ping = type == NL_SOCK_DGRAM &&
		   ((family == NL_AF_INET && protocol == NL_IPPROTO_ICMP) ||
		    (family == NL_AF_INET6 && protocol == NL_IPPROTO_ICMPV6));
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
	if (family == NL_AF_INET6)
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

/*
 * Puts every ABI type into this object's BTF, including the ones no map
 * names, so the agent can check its mirror against what it loads.
 */
struct nl_abi {
	struct nl_event event;
	enum nl_op op;
	enum nl_action action;
	enum nl_mode mode;
	enum nl_reason reason;
	enum nl_flag flag;
	enum nl_proto proto;
	enum nl_policy_flag policy_flag;
};
const volatile struct nl_abi nl_abi_anchor = {};

char LICENSE[] SEC("license") = "Dual BSD/GPL";
