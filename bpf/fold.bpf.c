// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * The flush of folded repeats (emit.bpf.h): the agent runs this program
 * (BPF_PROG_TEST_RUN) at least once a second and when it stops, so a repeat
 * folded after a decision's last record reaches the ring even when the
 * decision is never made again. It runs in the kernel for the fold lock: the
 * agent cannot take a slot's count atomically from user space. One run
 * flushes the cgroup the agent names: a struct nl_flush_ctx after an Ethernet
 * header's worth of zeros in the test packet. A tc program, not a syscall one:
 * syscall programs are sleepable, and 6.1 refuses bpf_spin_lock in those.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "emit.bpf.h"

SEC("tc")
int nl_flush_folds(struct __sk_buff *skb)
{
	struct nl_flush_ctx ctx;
	if (bpf_skb_load_bytes(skb, NL_FLUSH_CTX_OFF, &ctx, sizeof(ctx)))
		return 0;
	__u64 cgroup_id = ctx.cgroup_id;
	struct nl_folds *f = bpf_map_lookup_elem(&nl_folds, &cgroup_id);
	if (f)
		nl_flush_cgroup(cgroup_id, f);
	return 0;
}
