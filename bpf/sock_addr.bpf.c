// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * The address hooks: connect and sendmsg, IPv4 and IPv6. Like every netlogger
 * hook they attach once to a scope cgroup; a cgroup is governed when it (or
 * an ancestor) is in nl_enrollments. Returning 0 makes the syscall fail with
 * EPERM.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "decide.bpf.h"

/* The destination as the syscall gave it, then the shared decision. */
static __always_inline int nl_addr4(struct bpf_sock_addr *ctx, __u8 op)
{
	struct nl_dst dst = {};
	nl_dst_from_ip4(&dst, ctx->user_ip4, ctx->user_port);
	return nl_decide_addr(ctx, op, &dst);
}

static __always_inline int nl_addr6(struct bpf_sock_addr *ctx, __u8 op)
{
	struct nl_dst dst = {};
	__u32 ip6[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	nl_dst_from_ip6(&dst, ip6, ctx->user_port);
	return nl_decide_addr(ctx, op, &dst);
}

SEC("cgroup/connect4")
int nl_connect4(struct bpf_sock_addr *ctx)
{
	return nl_addr4(ctx, NL_OP_CONNECT);
}

SEC("cgroup/connect6")
int nl_connect6(struct bpf_sock_addr *ctx)
{
	return nl_addr6(ctx, NL_OP_CONNECT);
}

SEC("cgroup/sendmsg4")
int nl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return nl_addr4(ctx, NL_OP_SENDMSG);
}

SEC("cgroup/sendmsg6")
int nl_sendmsg6(struct bpf_sock_addr *ctx)
{
	return nl_addr6(ctx, NL_OP_SENDMSG);
}
