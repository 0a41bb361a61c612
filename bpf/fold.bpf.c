// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * The flush of folded repeats (emit.bpf.h): the agent runs this program
 * (BPF_PROG_TEST_RUN) at least once a second and when it stops, so a repeat
 * folded after a decision's last record reaches the ring even when the
 * decision is never made again. It runs in the kernel for the fold lock: the
 * agent cannot take a slot's count atomically from user space. One run
 * flushes the cgroup the agent names (struct nl_flush_ctx).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "emit.bpf.h"

SEC("syscall")
int nl_flush_folds(struct nl_flush_ctx *ctx)
{
	__u64 cgroup_id = ctx->cgroup_id;
	struct nl_folds *f = bpf_map_lookup_elem(&nl_folds, &cgroup_id);
	if (f)
		nl_flush_cgroup(cgroup_id, f);
	return 0;
}
