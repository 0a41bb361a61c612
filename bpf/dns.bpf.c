// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * DNS for enrolled cgroups: the egress hook remembers each UDP query (socket,
 * id, type, question), the ingress hook parses each UDP answer and, when it
 * answers a remembered query, comes from a policy resolver and its question
 * matches a domain rule, admits its A and AAAA addresses into the cgroup's
 * set, which the connect and sendmsg hooks decide against.
 *
 * Admission happens here, before the datagram is queued to the socket, so an
 * address is admitted before recvmsg can hand the answer to the resolver
 * library: there is no window in which a fresh name is denied, and no agent
 * on the path. Every answer is also copied into nl_dns_events for the agent.
 *
 * The parser is a state machine stepped by bpf_loop with its state in per-CPU
 * map memory: one step reads one label, one record header, or one address
 * with bpf_skb_load_bytes (direct packet access sees only the linear head,
 * and reassembled EDNS answers are longer). Any inconsistency ends it with
 * MALFORMED and nothing admitted: addresses are collected first and admitted
 * only once the whole answer section has parsed. TCP/53 is not parsed (see
 * README, "Domain rules").
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "decide.bpf.h"

#define NL_DNS_STEPS 2048	/* bpf_loop budget for one answer section */
#define NL_DNS_FOUND_MAX 64	/* addresses one answer can admit */
#define NL_DNS_CHAIN_MAX 8	/* the question and the CNAME targets it leads to */
#define NL_DNS_JUMPS_MAX 16	/* compression pointers followed in one name */
#define NL_DNS_QNAME_MAX 256
#define NL_FNV_BASIS 0xcbf29ce484222325ULL
#define NL_FNV_PRIME 0x100000001b3ULL
#define NL_ETH_P_IP 0x0800
#define NL_ETH_P_IPV6 0x86DD
#define NL_IPPROTO_UDP 17
#define NL_DNS_TYPE_A 1
#define NL_DNS_TYPE_CNAME 5
#define NL_DNS_TYPE_AAAA 28
#define NL_DNS_CLASS_IN 1

/* x &= mask where the verifier sees it: clang proves the mask redundant after
 * a range check and drops it, and the verifier cannot follow the proof. */
#define NL_BOUND(x, mask) asm volatile("%0 &= " #mask : "+r"(x))

enum nl_dns_phase {
	NL_P_QNAME,  /* the question name: hashed and copied */
	NL_P_QTAIL,  /* qtype, qclass */
	NL_P_QDONE,
	NL_P_OWNER,  /* an answer record's owner name: hashed */
	NL_P_RR,     /* type, class, ttl, rdlength, and an address */
	NL_P_CNAME,  /* a CNAME's target name: hashed, joins the chain */
	NL_P_DONE,
};

/* The UDP datagram an skb holds. */
struct nl_l4 {
	__u32 saddr[4];
	__u32 dns_off; /* the DNS message's offset in the skb */
	__u32 msg_len;
	__u16 sport;
	__u16 dport;
	__u16 family; /* enum nl_family */
};

struct nl_dns_chain {
	__u64 hash;
	__u32 off; /* where the name starts, for compression pointers to it */
	__u32 pad;
};

struct nl_dns_found {
	__u8 addr[16];
	__u32 ttl;
	__u8 family; /* enum nl_family */
	__u8 pad[3];
};

struct nl_dns_parse {
	__u32 dns_off;
	__u32 msg_len;
	__u32 off;	  /* next byte to read, counted from the DNS header */
	__u32 resume;	  /* where the record goes on after a followed pointer; 0 = none */
	__u32 floor;	  /* a pointer must aim below this, so names cannot loop */
	__u32 start;	  /* where the name being read starts */
	__u32 name_len;	  /* wire bytes of the name so far */
	__u32 rr_end;
	__u32 ttl;
	__u64 hash;	  /* of the name being read */
	__u64 owner;	  /* hash of the current record's owner */
	__u16 qlen;	  /* bytes in qname */
	__u16 qtype;
	__u16 rr_left;
	__u8 phase;
	__u8 jumps;
	__u8 bad_chars;	  /* the question has bytes no domain rule can name */
	__u8 error;
	__u8 n_chain;
	__u8 n_found;
	struct nl_dns_chain chain[NL_DNS_CHAIN_MAX];
	struct nl_dns_found found[NL_DNS_FOUND_MAX];
	__u8 label[64];
	__u8 qname[NL_DNS_QNAME_MAX]; /* ".api.github.com": lowercase, a dot before each label */
	struct nl_domain_key key;
};

struct nl_dns_scratch {
	struct nl_dns_parse p;
	__u64 rec[(sizeof(struct nl_dns_event) + NL_DNS_PAYLOAD_MAX) / 8]; /* one nl_dns_event */
};

_Static_assert(sizeof(struct nl_dns_scratch) <= NL_DNS_SCRATCH_BYTES,
	       "nl_dns_scratch (maps.bpf.h) is too small for the parser");

struct nl_dns_loop {
	struct __sk_buff *skb;
	struct nl_dns_parse *p;
};

static __always_inline struct nl_dns_scratch *nl_scratch(__u32 slot)
{
	return (struct nl_dns_scratch *)bpf_map_lookup_elem(&nl_dns_scratch, &slot);
}

/* The UDP datagram in `skb`, if it is one (IPv6 without extension headers). */
static __always_inline int nl_udp_of(struct __sk_buff *skb, struct nl_l4 *l4)
{
	__u32 l4_off;
	if (skb->protocol == bpf_htons(NL_ETH_P_IP)) {
		__u8 ip[20];
		if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip)) || ip[9] != NL_IPPROTO_UDP)
			return 0;
		if ((ip[6] & 0x3f) || ip[7]) /* a fragment: cgroup ingress sees whole datagrams */
			return 0;
		l4_off = (ip[0] & 0xf) * 4;
		__builtin_memcpy(l4->saddr, ip + 12, 4);
		l4->family = NL_FAMILY_INET;
	} else if (skb->protocol == bpf_htons(NL_ETH_P_IPV6)) {
		__u8 ip6[40];
		if (bpf_skb_load_bytes(skb, 0, ip6, sizeof(ip6)) || ip6[6] != NL_IPPROTO_UDP)
			return 0;
		l4_off = 40;
		__builtin_memcpy(l4->saddr, ip6 + 8, 16);
		l4->family = NL_FAMILY_INET6;
	} else {
		return 0;
	}
	__u16 ports[2];
	if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)))
		return 0;
	l4->sport = bpf_ntohs(ports[0]);
	l4->dport = bpf_ntohs(ports[1]);
	l4->dns_off = l4_off + 8;
	l4->msg_len = skb->len > l4->dns_off ? skb->len - l4->dns_off : 0;
	return 1;
}

static __always_inline int nl_host_char(__u8 c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static __always_inline void nl_name_begin(struct nl_dns_parse *p, __u8 phase)
{
	p->phase = phase;
	p->hash = NL_FNV_BASIS;
	p->resume = 0;
	p->floor = p->off;
	p->start = p->off;
	p->jumps = 0;
	p->name_len = 0;
}

/* One element of a name at p->off: a label, a pointer, or the root.
 * 1: the name is complete and p->off is past it; 0: more to read; -1: bad. */
static __always_inline int nl_name_step(struct __sk_buff *skb, struct nl_dns_parse *p)
{
	__u32 off = p->off;
	if (off >= p->msg_len)
		return -1;
	__u32 n = p->msg_len - off; /* at least 1: off < msg_len */
	if (n > sizeof(p->label))
		n = sizeof(p->label);
	/* 1..64 in the very register the helper reads: 6.1's verifier does not carry a
	 * bound checked on a copy back to the original, and a size of 0 is refused. */
	n -= 1;
	NL_BOUND(n, 0x3f);
	n += 1;
	if (bpf_skb_load_bytes(skb, p->dns_off + off, p->label, n))
		return -1;
	__u8 b = p->label[0];
	if (b == 0) {
		p->off = p->resume ? p->resume : off + 1;
		return 1;
	}
	if ((b & 0xc0) == 0xc0) {
		if (n < 2)
			return -1;
		__u32 target = ((__u32)(b & 0x3f) << 8) | p->label[1];
		if (target >= p->floor || ++p->jumps > NL_DNS_JUMPS_MAX)
			return -1;
		if (!p->resume)
			p->resume = off + 2;
		p->floor = target;
		/* A whole name that points at a chain name is that name. */
		if (p->hash == NL_FNV_BASIS && p->phase != NL_P_QNAME) {
			for (int i = 0; i < NL_DNS_CHAIN_MAX; i++) {
				if (i >= p->n_chain)
					break;
				if (p->chain[i].off == target) {
					p->hash = p->chain[i].hash;
					p->off = p->resume;
					return 1;
				}
			}
		}
		p->off = target;
		return 0;
	}
	if (b & 0xc0)
		return -1; /* 0x40 and 0x80 label types are obsolete */
	if (b + 1 > n)
		return -1;
	p->name_len += b + 1;
	if (p->name_len > 255)
		return -1;
	int copy = p->phase == NL_P_QNAME;
	__u32 at = p->qlen;
	__u64 h = (p->hash ^ '.') * NL_FNV_PRIME;
	if (copy && at < NL_DNS_QNAME_MAX) {
		__u32 dot = at;
		NL_BOUND(dot, 0xff);
		p->qname[dot] = '.';
	}
	for (int i = 1; i < 64; i++) {
		if (i > b)
			break;
		__u8 c = p->label[i];
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (!nl_host_char(c))
			p->bad_chars = 1;
		h = (h ^ c) * NL_FNV_PRIME;
		if (copy && at + i < NL_DNS_QNAME_MAX) {
			__u32 pos = at + i;
			NL_BOUND(pos, 0xff);
			p->qname[pos] = c;
		}
	}
	p->hash = h;
	if (copy)
		p->qlen = at + b + 1;
	p->off = off + b + 1;
	return 0;
}

static __always_inline int nl_in_chain(const struct nl_dns_parse *p, __u64 hash)
{
	for (int i = 0; i < NL_DNS_CHAIN_MAX; i++) {
		if (i >= p->n_chain)
			break;
		if (p->chain[i].hash == hash)
			return 1;
	}
	return 0;
}

static __always_inline long nl_next_record(struct nl_dns_parse *p)
{
	p->off = p->rr_end;
	if (!p->rr_left) {
		p->phase = NL_P_DONE;
		return 1;
	}
	p->rr_left--;
	nl_name_begin(p, NL_P_OWNER);
	return 0;
}

/* The fixed part of an answer record, and its address when it has one. */
static __always_inline long nl_record_step(struct __sk_buff *skb, struct nl_dns_parse *p)
{
	__u8 rr[10];
	if (p->off + sizeof(rr) > p->msg_len ||
	    bpf_skb_load_bytes(skb, p->dns_off + p->off, rr, sizeof(rr)))
		return -1;
	__u16 type = (rr[0] << 8) | rr[1], class = (rr[2] << 8) | rr[3];
	__u32 ttl = ((__u32)rr[4] << 24) | ((__u32)rr[5] << 16) | ((__u32)rr[6] << 8) | rr[7];
	__u16 rdlen = (rr[8] << 8) | rr[9];
	__u32 rdata = p->off + sizeof(rr);
	p->rr_end = rdata + rdlen;
	if (p->rr_end > p->msg_len)
		return -1;
	if (class != NL_DNS_CLASS_IN || !nl_in_chain(p, p->owner))
		return nl_next_record(p);
	if (type == NL_DNS_TYPE_CNAME) {
		p->off = rdata;
		nl_name_begin(p, NL_P_CNAME);
		return 0;
	}
	int v4 = type == NL_DNS_TYPE_A && rdlen == 4, v6 = type == NL_DNS_TYPE_AAAA && rdlen == 16;
	if (!v4 && !v6)
		return nl_next_record(p);
	__u32 i = p->n_found;
	if (i >= NL_DNS_FOUND_MAX)
		return nl_next_record(p); /* the rest stays unadmitted: denied, not wrong */
	struct nl_dns_found *f = &p->found[i];
	__builtin_memset(f->addr, 0, sizeof(f->addr));
	if (v4 ? bpf_skb_load_bytes(skb, p->dns_off + rdata, f->addr, 4) :
		 bpf_skb_load_bytes(skb, p->dns_off + rdata, f->addr, 16))
		return -1;
	f->family = v4 ? NL_FAMILY_INET : NL_FAMILY_INET6;
	f->ttl = ttl;
	p->n_found = i + 1;
	return nl_next_record(p);
}

static long nl_dns_step(__u32 index, struct nl_dns_loop *lp)
{
	struct nl_dns_parse *p = lp->p;
	struct __sk_buff *skb = lp->skb;
	long r;
	switch (p->phase) {
	case NL_P_QNAME:
	case NL_P_OWNER:
	case NL_P_CNAME:
		r = nl_name_step(skb, p);
		if (r <= 0)
			break;
		if (p->phase == NL_P_QNAME) {
			p->phase = NL_P_QTAIL;
		} else if (p->phase == NL_P_OWNER) {
			p->owner = p->hash;
			p->phase = NL_P_RR;
		} else {
			__u32 n = p->n_chain;
			if (n < NL_DNS_CHAIN_MAX) {
				p->chain[n].hash = p->hash;
				p->chain[n].off = p->start;
				p->n_chain = n + 1;
			}
			r = nl_next_record(p);
		}
		break;
	case NL_P_QTAIL: {
		__u8 tail[4];
		if (p->off + sizeof(tail) > p->msg_len ||
		    bpf_skb_load_bytes(skb, p->dns_off + p->off, tail, sizeof(tail)) ||
		    ((tail[2] << 8) | tail[3]) != NL_DNS_CLASS_IN) {
			r = -1;
			break;
		}
		p->qtype = (tail[0] << 8) | tail[1];
		p->off += sizeof(tail);
		p->phase = NL_P_QDONE;
		return 1;
	}
	case NL_P_RR:
		r = nl_record_step(skb, p);
		break;
	default:
		return 1;
	}
	if (r < 0) {
		p->error = 1;
		return 1;
	}
	return p->phase == NL_P_DONE;
}

/* The DNS header at the start of `l4`, checked for one question: flags, or -1. */
static __always_inline int nl_dns_header(struct __sk_buff *skb, const struct nl_l4 *l4,
					 struct nl_dns_parse *p, __u16 *txid, __u16 *ancount)
{
	__u8 h[12];
	if (l4->msg_len < sizeof(h) || bpf_skb_load_bytes(skb, l4->dns_off, h, sizeof(h)))
		return -1;
	if (((h[4] << 8) | h[5]) != 1)
		return -1; /* every resolver asks one question */
	*txid = (h[0] << 8) | h[1];
	*ancount = (h[6] << 8) | h[7];
	p->dns_off = l4->dns_off;
	p->msg_len = l4->msg_len > 0xffff ? 0xffff : l4->msg_len;
	p->off = sizeof(h);
	p->qlen = 0;
	p->bad_chars = 0;
	p->error = 0;
	p->n_chain = 0;
	p->n_found = 0;
	nl_name_begin(p, NL_P_QNAME);
	return (h[2] << 8) | h[3];
}

/* Parse the question; 0 when it parsed. */
static __always_inline int nl_dns_question(struct __sk_buff *skb, struct nl_dns_parse *p)
{
	struct nl_dns_loop lp = { .skb = skb, .p = p };
	bpf_loop(128 + 2, nl_dns_step, &lp, 0);
	return p->phase == NL_P_QDONE && !p->error ? 0 : -1;
}

SEC("cgroup_skb/egress")
int nl_dns_egress(struct __sk_buff *skb)
{
	struct nl_l4 l4 = {};
	if (!nl_udp_of(skb, &l4))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skb);
	if (l4.dport != NL_PORT_DNS && !bpf_map_lookup_elem(&nl_dns_socks, &cookie))
		return 1;
	__u64 cgroup_id;
	if (!nl_enrollment_of(skb, &cgroup_id))
		return 1;
	void *queries = bpf_map_lookup_elem(&nl_dns_queries, &cgroup_id);
	struct nl_dns_scratch *sc = nl_scratch(0);
	if (!queries || !sc)
		return 1;
	struct nl_dns_parse *p = &sc->p;
	__u16 txid, ancount;
	int flags = nl_dns_header(skb, &l4, p, &txid, &ancount);
	if (flags < 0 || (flags & 0x8000) || nl_dns_question(skb, p))
		return 1; /* not a query this parser can bind an answer to */
	struct nl_dns_query_key key = { .sock_cookie = cookie, .txid = txid, .qtype = p->qtype };
	struct nl_dns_query q = { .qhash = p->hash, .ts_ns = bpf_ktime_get_boot_ns() };
	bpf_map_update_elem(queries, &key, &q, BPF_ANY);
	return 1;
}

/* The question as an nl_domains key; 0 when no domain rule can name it. */
static __always_inline int nl_domain_key_of(struct nl_dns_parse *p, __u32 policy_id)
{
	__u32 len = p->qlen;
	if (p->bad_chars || len >= NL_DNS_NAME_MAX)
		return 0;
	struct nl_domain_key *k = &p->key;
	k->prefixlen = 32 + 8 * (len + 1);
	k->policy_id = policy_id;
	for (int i = 0; i < NL_DNS_NAME_MAX; i++) {
		if (i >= len) {
			k->name[i] = 0;
			break;
		}
		__u32 from = len - 1 - i;
		NL_BOUND(from, 0xff);
		k->name[i] = p->qname[from];
	}
	return 1;
}

/* What the question matches: a match id (0 = nothing) and the rule to name. */
static __always_inline __u32 nl_domain_match(struct nl_dns_parse *p, __u32 policy_id,
					     __u32 *rule_id)
{
	if (!nl_domain_key_of(p, policy_id))
		return 0;
	struct nl_domain *d = bpf_map_lookup_elem(&nl_domains, &p->key);
	if (!d)
		return 0;
	__u32 match = d->wildcard && d->name_len == p->qlen ? d->apex_match_id : d->match_id;
	struct nl_domain_ports_key pk = { .policy_id = policy_id, .match_id = match };
	struct nl_cidr_rules *rules = match ? bpf_map_lookup_elem(&nl_domain_ports, &pk) : 0;
	if (!rules || !rules->count)
		return 0;
	*rule_id = rules->rules[0].rule_id;
	return match;
}

struct nl_admit_ctx {
	struct nl_dns_parse *p;
	void *addrs;
	__u64 now;
	__u32 match;
	__u32 admitted;
};

static __always_inline __u64 nl_lifetime_ns(__u32 ttl)
{
	__u64 ns = (__u64)ttl * 1000000000ULL;
	if (ns < nl_cfg.dns_ttl_floor_ns)
		return nl_cfg.dns_ttl_floor_ns;
	return ns > nl_cfg.dns_ttl_cap_ns ? nl_cfg.dns_ttl_cap_ns : ns;
}

/* Give one found address this match until `expires`: an expiry only moves
 * later. With every slot taken by live matches, the one ending first goes. */
static long nl_admit_one(__u32 i, struct nl_admit_ctx *ax)
{
	struct nl_dns_parse *p = ax->p;
	if (i >= NL_DNS_FOUND_MAX)
		return 1;
	struct nl_dns_found *f = &p->found[i];
	struct nl_dns_addr_key key = { .family = f->family };
	__builtin_memcpy(key.addr, f->addr, sizeof(key.addr));
	__u64 expires = ax->now + nl_lifetime_ns(f->ttl);
	struct nl_dns_slots *slots = bpf_map_lookup_elem(ax->addrs, &key);
	if (!slots) {
		struct nl_dns_slots fresh = {};
		fresh.slot[0].expires_ns = expires;
		fresh.slot[0].match_id = ax->match;
		if (!bpf_map_update_elem(ax->addrs, &key, &fresh, BPF_NOEXIST))
			goto admitted;
		slots = bpf_map_lookup_elem(ax->addrs, &key); /* another CPU made it */
		if (!slots)
			return 0;
	}
	__u32 pick = 0;
	__u64 earliest = ~0ULL;
	for (int s = 0; s < NL_DNS_SLOTS; s++) {
		struct nl_dns_slot *slot = &slots->slot[s];
		if (slot->match_id == ax->match) {
			pick = s;
			break;
		}
		__u64 live_until = slot->match_id ? slot->expires_ns : 0;
		if (live_until < earliest) {
			earliest = live_until;
			pick = s;
		}
	}
	struct nl_dns_slot *slot = &slots->slot[pick & (NL_DNS_SLOTS - 1)];
	if (slot->match_id != ax->match) {
		slot->match_id = ax->match;
		slot->expires_ns = expires;
	} else if (slot->expires_ns < expires) {
		slot->expires_ns = expires;
	}
admitted:
	ax->admitted++;
	return 0;
}

/* Parse the answer section and admit what it gives for `match`; the verdict. */
static __always_inline __u8 nl_dns_admit(struct __sk_buff *skb, struct nl_dns_parse *p,
					 __u16 ancount, __u64 cgroup_id, __u32 match, __u16 *admitted)
{
	p->chain[0].hash = p->hash;
	p->chain[0].off = 12;
	p->n_chain = 1;
	p->rr_end = p->off;
	p->rr_left = ancount;
	struct nl_dns_loop lp = { .skb = skb, .p = p };
	if (!nl_next_record(p))
		bpf_loop(NL_DNS_STEPS, nl_dns_step, &lp, 0);
	if (p->error || p->phase != NL_P_DONE)
		return NL_DNS_MALFORMED;
	struct nl_admit_ctx ax = { .p = p, .now = bpf_ktime_get_boot_ns(), .match = match };
	ax.addrs = bpf_map_lookup_elem(&nl_dns_admitted, &cgroup_id);
	if (!ax.addrs)
		return NL_DNS_ADMITTED; /* enrolled without a set: nothing can be admitted */
	bpf_loop(p->n_found, nl_admit_one, &ax, 0);
	*admitted = ax.admitted;
	return NL_DNS_ADMITTED;
}

static __always_inline int nl_is_resolver(__u32 policy_id, const struct nl_l4 *l4)
{
	struct nl_resolver_key key = { .policy_id = policy_id };
	if (l4->family == NL_FAMILY_INET6) {
		struct nl_dst d = {};
		nl_dst_from_ip6(&d, l4->saddr, 0);
		key.family = d.family;
		__builtin_memcpy(key.addr, d.match, sizeof(key.addr));
	} else {
		key.family = NL_FAMILY_INET;
		__builtin_memcpy(key.addr, l4->saddr, 4);
	}
	return bpf_map_lookup_elem(&nl_resolvers, &key) != 0;
}

/* The outstanding query this answer answers, consumed: 1 when there was one. */
static __always_inline int nl_take_query(__u64 cgroup_id, __u64 cookie, __u16 txid,
					 const struct nl_dns_parse *p)
{
	void *queries = bpf_map_lookup_elem(&nl_dns_queries, &cgroup_id);
	if (!queries)
		return 0;
	struct nl_dns_query_key key = { .sock_cookie = cookie, .txid = txid, .qtype = p->qtype };
	struct nl_dns_query *q = bpf_map_lookup_elem(queries, &key);
	if (!q || q->qhash != p->hash)
		return 0;
	bpf_map_delete_elem(queries, &key);
	return 1;
}

struct nl_dns_outcome {
	__u32 policy_id;
	__u32 rule_id;
	__u16 admitted;
	__u8 verdict;
	__u8 flags;
};

/* One nl_dns_event for the agent: throttled like allowed decisions when it
 * admitted or matched nothing, never when it is one someone looks for. */
static __always_inline void nl_dns_emit(struct __sk_buff *skb, const struct nl_l4 *l4,
					struct nl_dns_event *e, __u64 cgroup_id, __u64 cookie,
					const struct nl_dns_outcome *o)
{
	struct nl_cgroup_state *st = nl_state_of(cgroup_id);
	if (!st)
		return;
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 seq = __sync_fetch_and_add(&st->dns_seq, 1);
	int routine = o->verdict == NL_DNS_ADMITTED || o->verdict == NL_DNS_NOT_MATCHED;
	if (routine && !nl_take_token(&st->dns_tat_ns, now)) {
		__sync_fetch_and_add(&st->dns_throttled, 1);
		return;
	}
	__u32 len = l4->msg_len > NL_DNS_PAYLOAD_MAX ? NL_DNS_PAYLOAD_MAX : l4->msg_len;
	NL_BOUND(len, 0x7ff);
	if (len < 12 || len > NL_DNS_PAYLOAD_MAX ||
	    bpf_skb_load_bytes(skb, l4->dns_off, e->payload, len))
		len = 0;
	__u32 size = sizeof(*e) + len;
	e->hdr.op = NL_OP_DNS;
	e->hdr.version = NL_ABI_VERSION;
	e->hdr.size = size;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->ts_ns = now;
	e->seq = seq;
	e->cgroup_id = cgroup_id;
	e->sock_cookie = cookie;
	e->policy_id = o->policy_id;
	e->rule_id = o->rule_id;
	__builtin_memcpy(e->server, l4->saddr, sizeof(e->server));
	e->server_port = l4->sport;
	e->family = l4->family;
	e->msg_len = l4->msg_len > 0xffff ? 0xffff : l4->msg_len;
	e->payload_len = len;
	e->admitted = o->admitted;
	e->verdict = o->verdict;
	e->flags = o->flags | (l4->msg_len > len ? NL_DNS_FLAG_CUT : 0);
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	if (bpf_ringbuf_output(&nl_dns_events, e, size & 0xfff, 0))
		__sync_fetch_and_add(&st->dns_ringbuf_lost, 1);
}

SEC("cgroup_skb/ingress")
int nl_dns_ingress(struct __sk_buff *skb)
{
	struct nl_l4 l4 = {};
	if (!nl_udp_of(skb, &l4) || l4.sport != NL_PORT_DNS)
		return 1;
	__u64 cgroup_id;
	struct nl_enrollment *en = nl_enrollment_of(skb, &cgroup_id);
	struct nl_dns_scratch *sc = nl_scratch(1);
	if (!en || !sc)
		return 1;
	struct nl_dns_parse *p = &sc->p;
	struct nl_dns_outcome o = { .policy_id = en->policy_id, .verdict = NL_DNS_MALFORMED };
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u16 txid, ancount;
	__u32 match;
	int flags = nl_dns_header(skb, &l4, p, &txid, &ancount);
	if (flags >= 0 && (flags & 0x8000)) {
		if (flags & 0x0200)
			o.flags |= NL_DNS_FLAG_TRUNCATED;
		if (!nl_is_resolver(o.policy_id, &l4))
			o.verdict = NL_DNS_FOREIGN;
		else if (nl_dns_question(skb, p))
			o.verdict = NL_DNS_MALFORMED;
		else if (!nl_take_query(cgroup_id, cookie, txid, p))
			o.verdict = NL_DNS_UNSOLICITED;
		else if (!(match = nl_domain_match(p, o.policy_id, &o.rule_id)))
			o.verdict = NL_DNS_NOT_MATCHED;
		else if (o.flags & NL_DNS_FLAG_TRUNCATED)
			o.verdict = NL_DNS_ADMITTED; /* a partial answer admits nothing; TCP follows */
		else
			o.verdict = nl_dns_admit(skb, p, ancount, cgroup_id, match, &o.admitted);
	} else if (flags >= 0) {
		return 1; /* a query arriving from port 53 is not an answer */
	}
	nl_dns_emit(skb, &l4, (struct nl_dns_event *)sc->rec, cgroup_id, cookie, &o);
	return 1;
}
