// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * Enrolls a container's cgroup the moment the engine makes it, before any
 * task is in it, so the container's first instruction is already governed.
 *
 * The agent learns a container at the engine's `create` event (labels are
 * known before the cgroup exists) and writes nl_pending: the name the cgroup
 * directory will have -> the enrollment and labels to give it. This program
 * runs on every cgroup mkdir and, for a cgroup v2 directory below the
 * agent's scope whose name is pending, writes nl_labels, nl_cgroup_state,
 * nl_enrollments and the level bit. Everything else returns at once.
 *
 * Only BTF-typed access (CO-RE) to the few kernel fields it reads; the
 * structs below name just those, and libbpf relocates them against the
 * running kernel's BTF. `kernfs_node.parent` was renamed on newer kernels,
 * so the parent is reached through `cgroup->self.parent->cgroup`.
 */
#include "maps.bpf.h"

#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct kernfs_node {
	const char *name;
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup_root {
	int hierarchy_id;
} __attribute__((preserve_access_index));

struct cgroup;

struct cgroup_subsys_state {
	struct cgroup *cgroup;
	struct cgroup_subsys_state *parent;
} __attribute__((preserve_access_index));

struct cgroup {
	struct cgroup_subsys_state self;
	struct kernfs_node *kn;
	struct cgroup_root *root;
	int level;
} __attribute__((preserve_access_index));

/* The default (v2) hierarchy is number 0, as the `0::` line of /proc/<pid>/cgroup
 * says; the v1 hierarchies of a hybrid host number their cgroups on their own,
 * so their ids must never reach nl_enrollments. */
#define NL_DFL_HIERARCHY 0

static __always_inline int nl_below(struct cgroup *cgrp, __u64 scope_id)
{
	struct cgroup_subsys_state *css = BPF_CORE_READ(cgrp, self.parent);
	for (int i = 0; i < NL_MAX_LEVELS; i++) {
		if (!css)
			return 0;
		struct cgroup *up = BPF_CORE_READ(css, cgroup);
		if (BPF_CORE_READ(up, kn, id) == scope_id)
			return 1;
		css = BPF_CORE_READ(up, self.parent);
	}
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(nl_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != NL_DFL_HIERARCHY)
		return 0;
	struct nl_pending_key key = {};
	if (bpf_probe_read_kernel_str(key.name, sizeof(key.name), BPF_CORE_READ(cgrp, kn, name)) < 0)
		return 0;
	struct nl_pending *p = bpf_map_lookup_elem(&nl_pending, &key);
	if (!p)
		return 0;
	int level = BPF_CORE_READ(cgrp, level);
	if (level < 0 || level >= NL_MAX_LEVELS || !nl_below(cgrp, p->scope_id))
		return 0;

	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	struct nl_cgroup_state fresh = {};
	bpf_map_update_elem(&nl_cgroup_state, &id, &fresh, BPF_NOEXIST);
	if (bpf_map_update_elem(&nl_labels, &id, &p->labels, BPF_ANY))
		return 0;
	struct nl_labels *labels = bpf_map_lookup_elem(&nl_labels, &id);
	if (labels)
		labels->level = level;
	if (bpf_map_update_elem(&nl_enrollments, &id, &p->enrollment, BPF_ANY))
		return 0;
	__u32 zero = 0;
	struct nl_levels *levels = bpf_map_lookup_elem(&nl_levels, &zero);
	if (levels)
		__sync_fetch_and_or(&levels->mask, 1u << level);
	p->cgroup_id = id;
	__sync_fetch_and_add(&p->enrolled, 1);
	return 0;
}
