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

SEC("cgroup/connect4")
int nl_connect4(struct bpf_sock_addr *ctx)
{
	return nl_decide_addr(ctx, NL_OP_CONNECT, NL_FAMILY_INET);
}

SEC("cgroup/connect6")
int nl_connect6(struct bpf_sock_addr *ctx)
{
	return nl_decide_addr(ctx, NL_OP_CONNECT, NL_FAMILY_INET6);
}

SEC("cgroup/sendmsg4")
int nl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return nl_decide_addr(ctx, NL_OP_SENDMSG, NL_FAMILY_INET);
}

SEC("cgroup/sendmsg6")
int nl_sendmsg6(struct bpf_sock_addr *ctx)
{
	return nl_decide_addr(ctx, NL_OP_SENDMSG, NL_FAMILY_INET6);
}
