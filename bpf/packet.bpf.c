// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * The two layers that close what the cgroup socket hooks cannot see.
 *
 * nl_packet_socket (lsm_cgroup/socket_create, Linux 6.0+, where the kernel
 * takes trampoline programs): denies the sockets that write frames past every
 * inet hook: AF_PACKET of any type, the obsolete SOCK_PACKET form, and AF_XDP,
 * whose TX ring puts frames on a device the same way. Attached to the scope
 * like the cgroup hooks; it runs for the creating task's cgroup.
 *
 * nl_backstop (tc, every kernel): on the host side of an enrolled container's
 * veth, whose ingress is everything the container sends, whatever socket (or
 * none) it used. Holds IP destinations to the container's policy; lets ARP and
 * IPv6 neighbour discovery through; drops every other ethertype.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "decide.bpf.h"
#include "emit.bpf.h"
#include "maps.bpf.h"
#include "netlogger.h"

#define NL_SOCK_PACKET 10
#define NL_SOCK_TYPE_MASK 0xf

/* Returning 0 fails socket() with EPERM; 1 lets it be. */
SEC("lsm_cgroup/socket_create")
int nl_packet_socket(unsigned long long *ctx)
{
	int family = (int)ctx[0], type = (int)ctx[1] & NL_SOCK_TYPE_MASK, protocol = (int)ctx[2];
	int kern = (int)ctx[3];
	/* The kernel's own sockets are no workload's; (AF_INET, SOCK_PACKET)
	 * reaches this hook already rewritten to AF_PACKET, the type check is
	 * for any family that ever accepts it. */
	if (kern || (family != NL_FAMILY_PACKET && family != NL_FAMILY_XDP && type != NL_SOCK_PACKET))
		return 1;

	__u64 cgroup_id;
	struct nl_enrollment *en = nl_find_enrollment(&cgroup_id);
	if (!en)
		return 1;

	struct nl_verdict v = {
		.policy_id = en->policy_id,
		.mode = en->mode,
		.action = NL_ACTION_DENIED,
		.reason = NL_REASON_PACKET_SOCKET,
	};
	__u64 now = bpf_ktime_get_boot_ns();
	nl_apply_mode(en, now, &v);

	struct nl_dst dst = { .flags = NL_FLAG_NO_DST, .asked_family = family };
	struct nl_subject subj = {
		.cgroup_id = cgroup_id,
		.sock_type = type,
		.protocol = protocol,
		.op = NL_OP_SOCK_CREATE,
	};
	nl_emit(&subj, &dst, &v, now);
	return v.action != NL_ACTION_DENIED;
}

#define NL_TC_ACT_UNSPEC (-1) /* not ours to decide: the next filter, or pass */
#define NL_TC_ACT_SHOT 2
#define NL_ETH_HLEN 14
#define NL_ETH_P_IP 0x0800
#define NL_ETH_P_ARP 0x0806
#define NL_ETH_P_IPV6 0x86DD
#define NL_IPPROTO_HOPOPTS 0
#define NL_IPPROTO_TCP 6
#define NL_IPPROTO_UDP 17

/* IPv6 link-local control the container's own kernel sends: multicast listener
 * queries/reports/done (130-132, 143) and neighbour discovery (133-137). */
static __always_inline int nl_icmp6_link_control(__u8 type)
{
	return (type >= 130 && type <= 137) || type == 143;
}

/* The frame's destination, and how the policy sees it; 0 when the frame
 * passes undecided (ARP, neighbour discovery). */
struct nl_frame {
	struct nl_dst dst;
	__u16 ethertype;
	__u8 l4;    /* IPPROTO_* */
	__u8 proto; /* enum nl_proto bit, 0 for neither TCP nor UDP */
};

static __always_inline void nl_frame_ports(struct __sk_buff *skb, __u32 l4_off,
					   struct nl_frame *f)
{
	__u16 port;
	if ((f->l4 == NL_IPPROTO_TCP || f->l4 == NL_IPPROTO_UDP) &&
	    !bpf_skb_load_bytes(skb, l4_off + 2, &port, sizeof(port))) {
		f->dst.port = bpf_ntohs(port);
		f->proto = f->l4 == NL_IPPROTO_TCP ? NL_PROTO_TCP : NL_PROTO_UDP;
	}
}

/* 1: decide `f`; 0: let the frame pass; -1: an IP frame too short to read. */
static __always_inline int nl_parse(struct __sk_buff *skb, struct nl_frame *f)
{
	__u16 proto;
	if (bpf_skb_load_bytes(skb, 12, &proto, sizeof(proto)))
		return -1;
	f->ethertype = bpf_ntohs(proto);
	if (f->ethertype == NL_ETH_P_ARP)
		return 0;
	if (f->ethertype == NL_ETH_P_IP) {
		__u8 ip[20];
		if (bpf_skb_load_bytes(skb, NL_ETH_HLEN, ip, sizeof(ip)))
			return -1;
		__u32 daddr;
		__builtin_memcpy(&daddr, &ip[16], sizeof(daddr));
		nl_dst_from_ip4(&f->dst, daddr, 0);
		f->l4 = ip[9];
		/* A later fragment carries no ports: it is decided with port 0. */
		__u16 frag = ((__u16)(ip[6] & 0x1f) << 8) | ip[7];
		if (!frag)
			nl_frame_ports(skb, NL_ETH_HLEN + (ip[0] & 0xf) * 4, f);
		return 1;
	}
	if (f->ethertype == NL_ETH_P_IPV6) {
		__u32 ip6[10];
		if (bpf_skb_load_bytes(skb, NL_ETH_HLEN, ip6, sizeof(ip6)))
			return -1;
		nl_dst_from_ip6(&f->dst, &ip6[6], 0);
		f->dst.flags |= NL_FLAG_IPV6;
		f->l4 = ((__u8 *)ip6)[6];
		__u32 l4_off = NL_ETH_HLEN + 40;
		/* One hop-by-hop header is looked through: multicast listener reports
		 * carry one (router alert). Other extension headers are decided
		 * without ports. */
		if (f->l4 == NL_IPPROTO_HOPOPTS) {
			__u8 ext[2];
			if (bpf_skb_load_bytes(skb, l4_off, ext, sizeof(ext)))
				return -1;
			f->l4 = ext[0];
			l4_off += (ext[1] + 1) * 8;
		}
		if (f->l4 == NL_IPPROTO_ICMPV6) {
			__u8 type;
			if (bpf_skb_load_bytes(skb, l4_off, &type, 1))
				return -1;
			if (nl_icmp6_link_control(type))
				return 0;
		}
		nl_frame_ports(skb, l4_off, f);
		return 1;
	}
	f->dst.asked_family = NL_FAMILY_PACKET;
	f->dst.flags = NL_FLAG_NO_DST;
	return 1;
}

SEC("tc")
int nl_backstop(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct nl_veth *veth = bpf_map_lookup_elem(&nl_veths, &ifindex);
	if (!veth)
		return NL_TC_ACT_UNSPEC;
	__u64 cgroup_id = veth->cgroup_id;
	struct nl_enrollment *en = bpf_map_lookup_elem(&nl_enrollments, &cgroup_id);
	if (!en)
		return NL_TC_ACT_UNSPEC; /* unenrolled: untouched, as in the cgroup hooks */

	struct nl_frame f = {};
	int parsed = nl_parse(skb, &f);
	if (!parsed)
		return NL_TC_ACT_UNSPEC;

	__u32 policy_id = en->policy_id;
	__u64 now = bpf_ktime_get_boot_ns();
	struct nl_verdict v = { .policy_id = policy_id, .mode = en->mode };
	if (parsed < 0 || f.dst.asked_family == NL_FAMILY_PACKET) {
		v.action = NL_ACTION_DENIED;
		v.reason = NL_REASON_ETHERTYPE;
	} else if (f.l4 == NL_IPPROTO_ICMP || f.l4 == NL_IPPROTO_ICMPV6) {
		v.reason = NL_REASON_ICMP;
		v.action = nl_policy_flags(policy_id) & NL_POLICY_ICMP_ALLOW ? NL_ACTION_ALLOWED :
									      NL_ACTION_DENIED;
	} else if (!nl_decide_dst(cgroup_id, policy_id, &f.dst, f.proto, now, &v)) {
		return NL_TC_ACT_UNSPEC;
	}
	/* What the policy allows was recorded at connect/sendmsg already. */
	if (v.action == NL_ACTION_ALLOWED)
		return NL_TC_ACT_UNSPEC;

	nl_apply_mode(en, now, &v);
	__u8 l4 = f.l4;
	struct nl_subject subj = {
		.cgroup_id = cgroup_id,
		.sock_type = l4 == NL_IPPROTO_TCP ? NL_SOCK_STREAM :
			     l4 == NL_IPPROTO_UDP ? NL_SOCK_DGRAM : NL_SOCK_RAW,
		.protocol = f.dst.asked_family == NL_FAMILY_PACKET ? f.ethertype : l4,
		.op = NL_OP_PACKET,
	};
	/* A flood of frames must not flood the ring: these drops are rate-limited,
	 * and what the bucket drops is counted as throttled, per cgroup. */
	nl_emit_packet(&subj, &f.dst, &v, now);
	return v.action == NL_ACTION_DENIED ? NL_TC_ACT_SHOT : NL_TC_ACT_UNSPEC;
}
