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

/* DNS (dns.bpf.c and the connect hooks). Answers go to a ring of their own,
 * so a burst of answers cannot crowd decisions out of nl_events. */
struct nl_dns_events_def {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20);
};
extern struct nl_dns_events_def nl_dns_events SEC(".maps");

struct nl_domains_def {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nl_domain_key);
	__type(value, struct nl_domain);
};
extern struct nl_domains_def nl_domains SEC(".maps");

struct nl_domain_ports_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nl_domain_ports_key);
	__type(value, struct nl_cidr_rules);
};
extern struct nl_domain_ports_def nl_domain_ports SEC(".maps");

/* One LRU per enrolled cgroup, made by the agent on enroll: a workload that
 * resolves a million names evicts only its own addresses and queries. Inner
 * maps state sizes, not types: BTF would name their key and value types only
 * by a forward declaration in units that reach them through the outer map. */
struct nl_dns_addrs_inner {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NL_DNS_ADDRS_MAX);
	__uint(key_size, sizeof(struct nl_dns_addr_key));
	__uint(value_size, sizeof(struct nl_dns_slots));
};

struct nl_dns_admitted_def {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__array(values, struct nl_dns_addrs_inner);
};
extern struct nl_dns_admitted_def nl_dns_admitted SEC(".maps");

struct nl_dns_queries_inner {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NL_DNS_QUERIES_MAX);
	__uint(key_size, sizeof(struct nl_dns_query_key));
	__uint(value_size, sizeof(struct nl_dns_query));
};

struct nl_dns_queries_def {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__array(values, struct nl_dns_queries_inner);
};
extern struct nl_dns_queries_def nl_dns_queries SEC(".maps");

/* Sockets that connected or sent to port 53: behind Docker's NAT the egress
 * hook sees the query leave for another port. Socket cookie -> unused. */
struct nl_dns_socks_def {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
};
extern struct nl_dns_socks_def nl_dns_socks SEC(".maps");

/* The DNS parser's per-CPU working memory (dns.bpf.c lays it out): slot 0
 * for egress (process context), 1 for ingress (softirq, which can interrupt
 * an egress program on the same CPU). */
struct nl_dns_scratch_def {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u8[NL_DNS_SCRATCH_BYTES]);
};
extern struct nl_dns_scratch_def nl_dns_scratch SEC(".maps");
/* Written by the agent, read (and counted in) by the cgroup_mkdir program. */
struct nl_pending_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nl_pending_key);
	__type(value, struct nl_pending);
};
extern struct nl_pending_def nl_pending SEC(".maps");
struct nl_folds_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct nl_folds);
};
extern struct nl_folds_def nl_folds SEC(".maps");

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
struct nl_veths_def {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct nl_veth);
};
extern struct nl_veths_def nl_veths SEC(".maps");

extern const volatile struct nl_config nl_cfg;

#endif /* NETLOGGER_MAPS_BPF_H */
