// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * The one definition of every global the programs share: the maps, the
 * loader-set constants and the licence. Program units declare them through
 * maps.bpf.h and never define a global of their own that another unit needs.
 */
#include "maps.bpf.h"

struct nl_events_def nl_events SEC(".maps");
struct nl_enrollments_def nl_enrollments SEC(".maps");
struct nl_cgroup_state_def nl_cgroup_state SEC(".maps");
struct nl_cpu_loss_def nl_cpu_loss SEC(".maps");
struct nl_policies_def nl_policies SEC(".maps");
struct nl_cidrs_def nl_cidrs SEC(".maps");
struct nl_resolvers_def nl_resolvers SEC(".maps");
struct nl_levels_def nl_levels SEC(".maps");
struct nl_pending_def nl_pending SEC(".maps");
struct nl_folds_def nl_folds SEC(".maps");
struct nl_labels_def nl_labels SEC(".maps");
struct nl_reported_def nl_reported SEC(".maps");
struct nl_meta_def nl_meta SEC(".maps");
struct nl_dns_events_def nl_dns_events SEC(".maps");
struct nl_domains_def nl_domains SEC(".maps");
struct nl_domain_ports_def nl_domain_ports SEC(".maps");
struct nl_dns_socks_def nl_dns_socks SEC(".maps");
struct nl_dns_scratch_def nl_dns_scratch SEC(".maps");
struct nl_dns_admitted_def nl_dns_admitted SEC(".maps");
struct nl_dns_queries_def nl_dns_queries SEC(".maps");
struct nl_veths_def nl_veths SEC(".maps");

const volatile struct nl_config nl_cfg = {};

/*
 * Puts every ABI type into this object's BTF, including the ones no map
 * names, so the agent can check its mirror against what it loads.
 */
struct nl_abi {
	struct nl_event event;
	struct nl_folds folds;
	struct nl_flush_ctx flush_ctx;
	enum nl_op op;
	enum nl_action action;
	enum nl_mode mode;
	enum nl_reason reason;
	enum nl_flag flag;
	enum nl_proto proto;
	enum nl_policy_flag policy_flag;
	enum nl_family family;
	enum nl_port port;
	enum nl_cidr_prefix cidr_prefix;
	enum nl_flush flush;
	enum nl_writer writer;
	enum nl_dns_verdict dns_verdict;
	enum nl_dns_flag dns_flag;
	enum nl_source source;
	/* Reached only through pointers elsewhere, which BTF records as bare names. */
	struct nl_dns_addr_key dns_addr_key;
	struct nl_dns_slots dns_slots;
	struct nl_dns_query_key dns_query_key;
	struct nl_dns_query dns_query;
	struct nl_dns_event dns_event; /* last: it ends in its variable-size payload */
};
const volatile struct nl_abi nl_abi_anchor = {};

char LICENSE[] SEC("license") = "Dual BSD/GPL";
