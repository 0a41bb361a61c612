/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only) */
/*
 * The maps every program shares, declared: each map's shape is stated once
 * here, and maps.bpf.c alone defines the maps themselves. Every other unit
 * sees them `extern`, and libbpf's static linker (setup.py) resolves them to
 * that one definition, refusing a shape that differs. The agent pins them.
 *
 * Adding a map: its shape and `extern` declaration here, its definition in
 * maps.bpf.c, its MapSpec in netlogger/kernel/spec.py.
 */
#ifndef NETLOGGER_MAPS_BPF_H
#define NETLOGGER_MAPS_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "netlogger.h"

/* Sizes here are defaults; the loader may resize before load. */
struct nl_events_def {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
};
extern struct nl_events_def nl_events SEC(".maps");

struct nl_enrollments_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct nl_enrollment);
};
extern struct nl_enrollments_def nl_enrollments SEC(".maps");

struct nl_cgroup_state_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct nl_cgroup_state);
};
extern struct nl_cgroup_state_def nl_cgroup_state SEC(".maps");

struct nl_cpu_loss_def {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nl_cpu_loss);
};
extern struct nl_cpu_loss_def nl_cpu_loss SEC(".maps");

struct nl_policies_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct nl_policy);
};
extern struct nl_policies_def nl_policies SEC(".maps");

struct nl_cidrs_def {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nl_cidr_key);
	__type(value, struct nl_cidr_rules);
};
extern struct nl_cidrs_def nl_cidrs SEC(".maps");

struct nl_resolvers_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct nl_resolver_key);
	__type(value, __u32);
};
extern struct nl_resolvers_def nl_resolvers SEC(".maps");

struct nl_levels_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nl_levels);
};
extern struct nl_levels_def nl_levels SEC(".maps");

/* Agent-only state, pinned beside the maps the programs use. */
struct nl_labels_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct nl_labels);
};
extern struct nl_labels_def nl_labels SEC(".maps");

struct nl_reported_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct nl_reported);
};
extern struct nl_reported_def nl_reported SEC(".maps");

struct nl_meta_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nl_meta);
};
extern struct nl_meta_def nl_meta SEC(".maps");


/* Loader-set constants (.rodata), fixed at load time; defined in maps.bpf.c. */
extern const volatile struct nl_config nl_cfg;

#endif /* NETLOGGER_MAPS_BPF_H */
