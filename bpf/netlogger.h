/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only) */
/*
 * The ABI between the BPF programs and the netlogger agent: every struct and
 * enum that crosses the kernel/user boundary, and nothing else.
 *
 * Rules for this file: fixed-width types only, largest fields first, explicit
 * padding (no hidden holes: the Python mirror in netlogger/kernel/abi.py reads
 * raw bytes), and a bump of NL_ABI_VERSION whenever a record layout changes.
 * tests/unit/test_abi.py checks the Python mirror against the BTF of the
 * compiled object, field by field, and every enum value by value (constants
 * Python needs too are enums for that reason: they appear in BTF).
 *
 * Address families: every `family` field in these structs holds AF_INET or
 * AF_INET6 (enum nl_family), the kernel's own values, never 4 or 6; only a
 * record of a created socket or of a frame may also hold AF_PACKET or AF_XDP.
 */
#ifndef NETLOGGER_H
#define NETLOGGER_H

#include <linux/types.h>
#include <linux/bpf.h> /* struct bpf_spin_lock */

#define NL_ABI_VERSION 3

#define NL_COMM_LEN 16
#define NL_MAX_LEVELS 32	 /* cgroup depths the enrollment lookup searches */
#define NL_MAX_PORT_RULES 16	 /* port rules per (policy, prefix) */
#define NL_CGROUP_NAME_LEN 128 /* a cgroup directory name, NUL included */
#define NL_FOLD_SLOTS 8	 /* distinct decisions folded at once per enrolled cgroup */

/* The values of AF_INET, AF_INET6, AF_PACKET and AF_XDP. */
enum nl_family {
	NL_FAMILY_INET = 2,
	NL_FAMILY_INET6 = 10,
	NL_FAMILY_PACKET = 17,
	NL_FAMILY_XDP = 44,
};

/* Destination ports that are DNS: only a policy's resolvers may be asked. */
enum nl_port {
	NL_PORT_DNS = 53,
	NL_PORT_DNS_TLS = 853, /* DNS over TLS */
};

/* Bits of an nl_cidr_key ahead of the address that a prefix always covers:
 * policy_id and family. A key's prefixlen is this plus the address prefix. */
enum nl_cidr_prefix {
	NL_CIDR_PREFIX_BITS = 40,
};

enum nl_op {
	NL_OP_CONNECT = 1,
	NL_OP_SENDMSG = 2,
	NL_OP_SOCK_CREATE = 3,
	NL_OP_DNS = 4, /* struct nl_dns_event, in its own ring nl_dns_events */
	NL_OP_PACKET = 5, /* a frame the container backstop (tc) decided */
};

enum nl_action {
	NL_ACTION_ALLOWED = 0,
	NL_ACTION_DENIED = 1,
	NL_ACTION_BYPASSED = 2,
};

enum nl_mode {
	NL_MODE_ENFORCE = 0,
	NL_MODE_AUDIT = 1,
	NL_MODE_BYPASS = 2, /* reported only: bypass is an expiry, not a stored mode */
};

enum nl_reason {
	NL_REASON_RULE = 1,		     /* an allow rule matched */
	NL_REASON_DEFAULT_DENY = 2,	     /* no rule matched */
	NL_REASON_RAW_SOCKET = 3,	     /* SOCK_RAW in an inet family */
	NL_REASON_RESOLVER = 4,		     /* DNS to one of the policy's resolvers */
	NL_REASON_RESOLVER_NOT_ALLOWED = 5, /* DNS port to anything else */
	NL_REASON_ICMP = 6,		     /* ping socket, decided by the policy's icmp */
	NL_REASON_LOOPBACK = 7,		     /* loopback or unspecified address */
	NL_REASON_BYPASS = 8,		     /* inside a bypass window */
	NL_REASON_UNRESOLVED_IP = 9,	     /* domain rules exist; no live answer admitted it */
	NL_REASON_DNS_OVER_TLS = 10,	     /* port 853 to anything but the policy's resolvers */
	NL_REASON_DNS_OVER_TCP = 11,	     /* TCP/53 to anything but the policy's resolvers */
	NL_REASON_PACKET_SOCKET = 12,     /* AF_PACKET, SOCK_PACKET or AF_XDP socket */
	NL_REASON_ETHERTYPE = 13,	     /* a frame neither IP, ARP nor neighbour discovery */
};

enum nl_flag {
	NL_FLAG_IPV6 = 1 << 0,	      /* the socket is AF_INET6 */
	NL_FLAG_IPV4_MAPPED = 1 << 1, /* ::ffff:a.b.c.d, decided as IPv4 */
	NL_FLAG_NAT64 = 1 << 2,	      /* 64:ff9b::/96, decided as IPv4 */
	NL_FLAG_NO_DST = 1 << 3,      /* socket creation: no destination */
	NL_FLAG_WOULD_DENY = 1 << 4,  /* the policy denies; audit or bypass let it pass */
	NL_FLAG_UDP_CONNECT = 1 << 5, /* connect() of a UDP socket: sends nothing by itself
				       * (glibc's getaddrinfo probes every candidate so) */
};

enum nl_proto {
	NL_PROTO_TCP = 1 << 0,
	NL_PROTO_UDP = 1 << 1,
};

enum nl_policy_flag {
	NL_POLICY_LOG_LOOPBACK = 1 << 0,
	NL_POLICY_ICMP_ALLOW = 1 << 1,
	NL_POLICY_HAS_DOMAINS = 1 << 2, /* unresolved destinations get NL_REASON_UNRESOLVED_IP */
};

/* nl_labels.source: who said who a cgroup is. */
enum nl_source {
	NL_SOURCE_STATIC = 0, /* the config or `netlogger enroll --cgroup` */
	NL_SOURCE_ENGINE = 1, /* the container engine (directly, or at mkdir from nl_pending) */
};

/* Every ring record starts with this, so the decoder can dispatch and check. */
struct nl_hdr {
	__u8 op;      /* enum nl_op */
	__u8 version; /* NL_ABI_VERSION */
	__u16 size;   /* bytes in the whole record */
	__u32 cpu;
};

/* One egress decision of an enrolled cgroup. */
struct nl_event {
	struct nl_hdr hdr;
	__u64 ts_ns;	      /* CLOCK_BOOTTIME */
	__u64 seq;	      /* per enrolled cgroup, counts throttled and lost records too */
	__u64 cgroup_id;      /* the enrolled cgroup that decided */
	__u64 task_cgroup_id; /* the task's own cgroup (may be a descendant) */
	__u64 sock_cookie;
	/* A record may stand for repeat_count identical decisions (folded, see
	 * emit.bpf.h): itself the last of them, the first at repeat_first_ns with
	 * sequence number repeat_seq_first. repeat_count is 1 for a lone one. */
	__u64 repeat_first_ns;
	__u64 repeat_seq_first;
	__u32 pid; /* thread group id */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 repeat_count;
	__u32 rule_id;	 /* identity of the rule that decided, 0 when none */
	__u32 policy_id;
	__u8 daddr[16];	 /* as asked; IPv4 in the first four bytes */
	__u16 dport;	 /* host order */
	__u16 family;	 /* enum nl_family: the form daddr holds */
	__u16 sock_type; /* SOCK_STREAM, SOCK_DGRAM, SOCK_RAW */
	__u16 protocol;	 /* IPPROTO_* of the socket */
	__u8 action;	 /* enum nl_action */
	__u8 mode;	 /* enum nl_mode */
	__u8 reason;	 /* enum nl_reason */
	__u8 flags;	 /* enum nl_flag */
	char comm[NL_COMM_LEN];
};

/* What makes two decisions "the same" for folding (besides the enrolled
 * cgroup, which keys nl_folds): the task, the verdict, the destination and
 * the socket asked for. Anything a record shows belongs here: two attempts
 * that differ in it (AF_PACKET and AF_XDP raw sockets, say) are two records.
 * 32 bytes, because the key sits on the stack of every emitting program,
 * within 512 bytes: op, action and mode share one byte, and a decision with
 * no destination (NL_FLAG_NO_DST) has its socket's family where the
 * address would be (the flags tell the two apart). */
struct nl_fold_key {
	__u8 daddr[16];
	__u32 tgid;
	__u32 rule_id;
	__u16 dport;
	__u8 verdict; /* action | mode << 2 | op << 4 */
	__u8 reason;
	__u8 flags;
	__u8 sock_type;
	__u16 protocol; /* as socket() took it, or the frame's (the backstop) */
};
_Static_assert(sizeof(struct nl_fold_key) == 32, "nl_key_eq compares four 8-byte words");
_Static_assert(NL_ACTION_BYPASSED < 4 && NL_MODE_BYPASS < 4 && NL_OP_PACKET < 16,
	       "action, mode and op fit nl_fold_key.verdict");

/* One decision being folded: repeats of it within nl_config.fold_window_ns
 * of its last record are counted here instead of written to the ring. */
struct nl_fold_slot {
	struct nl_fold_key key;
	__u64 last_record_ns; /* when the last record of this decision was written */
	__u64 first_ns;	      /* the first folded repeat not yet in a record */
	__u64 last_ns;	      /* the last one */
	__u64 seq_first;
	__u64 seq_last;
	__u32 count; /* folded repeats not yet in a record */
	__u32 ready; /* `last` holds the last record of `key`: a flush can copy it */
	struct nl_event last;
};

/* nl_folds: enrolled cgroup id -> its folds, under one lock: a repeat is
 * either counted in a slot or in a record, never both and never neither. */
struct nl_folds {
	struct bpf_spin_lock lock;
	__u32 pad;
	struct nl_fold_slot slots[NL_FOLD_SLOTS];
};

/* nl_enrollments: cgroup id -> how that cgroup is governed. Written by the agent. */
struct nl_enrollment {
	__u64 bypass_until_ns; /* CLOCK_BOOTTIME; the kernel ends the bypass, 0 = none */
	__u32 policy_id;
	__u8 mode;	       /* NL_MODE_ENFORCE or NL_MODE_AUDIT */
	__u8 pad[3];
};

/* nl_cgroup_state: cgroup id -> counters the programs keep. */
struct nl_cgroup_state {
	__u64 seq;	    /* next sequence number */
	__u64 tat_ns;	    /* token bucket (GCRA) theoretical arrival time */
	__u64 throttled;    /* allowed records and backstop drops dropped by the token bucket */
	__u64 ringbuf_lost; /* records lost because the ring was full */
	__u64 dns_seq;	    /* next DNS record sequence number (nl_dns_events) */
	__u64 dns_tat_ns;   /* token bucket of the DNS records */
	__u64 dns_throttled;
	__u64 dns_ringbuf_lost;
};

/* nl_cpu_loss: per-CPU counters of what could not be recorded. */
struct nl_cpu_loss {
	__u64 ringbuf_lost; /* ring reserve failures */
	__u64 no_state;	    /* an enrolled cgroup without a state entry */
};

/*
 * nl_veths: host-side ifindex of an enrolled container's veth -> the enrolled
 * cgroup whose policy the backstop holds that veth's frames to. Written by the agent.
 */
struct nl_veth {
	__u64 cgroup_id;
};

/* nl_policies: policy id -> policy-wide switches. */
struct nl_policy {
	__u32 flags; /* enum nl_policy_flag */
	__u32 pad;
};

/*
 * nl_cidrs (LPM trie): (policy, family, prefix) -> the port rules of that
 * prefix and of every shorter prefix that contains it, so the longest match
 * alone answers. The family byte keeps an IPv6 ::/0 from covering IPv4.
 */
struct nl_cidr_key {
	__u32 prefixlen; /* NL_CIDR_PREFIX_BITS + the address prefix length */
	__u32 policy_id;
	__u8 family; /* enum nl_family */
	__u8 addr[16];
	__u8 pad[3];
};

struct nl_port_rule {
	__u16 port_lo;
	__u16 port_hi;
	__u8 protos; /* enum nl_proto mask */
	__u8 pad[3];
	__u32 rule_id;
};

/*
 * Who wrote an nl_cidrs entry. Each writer replaces and deletes only its own
 * entries, so entries of one (DNS answers, say) survive another's rewrite (a
 * policy re-apply). Zero is the policy applier: an entry a writer forgot to tag
 * is the applier's to delete, so an untagged entry cannot outlive its policy.
 */
enum nl_writer {
	NL_WRITER_POLICY = 0,
};

struct nl_cidr_rules {
	__u32 count;
	__u32 writer; /* enum nl_writer */
	struct nl_port_rule rules[NL_MAX_PORT_RULES];
};

/* nl_resolvers: (policy, family, address) -> rule id of that resolver. */
struct nl_resolver_key {
	__u32 policy_id;
	__u8 family; /* enum nl_family */
	__u8 pad[3];
	__u8 addr[16];
};

/* nl_levels[0]: bit n set when some enrolled cgroup sits at depth n. */
struct nl_levels {
	__u32 mask;
	__u32 pad;
};

/*
 * nl_labels: cgroup id -> who an enrolled cgroup is. Only the agent reads it;
 * it is pinned with the rest so a restarted agent knows what it enrolled.
 */
struct nl_labels {
	__u32 level; /* depth in the cgroup v2 hierarchy */
	__u8 source; /* enum nl_source */
	__u8 pad[3];
	char policy[32];
	char agent[64];
	char project[64];
	char container_id[72]; /* 64 hex digits and a NUL, padded to 8 bytes */
	char path[256];	       /* the cgroup directory, for people */
};

/*
 * nl_pending: the name a container's cgroup directory will have -> how to
 * govern it. Written by the agent at the engine's `create` event; the
 * cgroup_mkdir program enrolls a new cgroup v2 directory of that name below
 * scope_id before any task is in it, and counts it here.
 */
struct nl_pending_key {
	char name[NL_CGROUP_NAME_LEN];
};

struct nl_pending {
	__u64 scope_id;	 /* only cgroups below this one are enrolled */
	__u64 cgroup_id; /* written by the kernel: the last cgroup it enrolled */
	__u64 enrolled;	 /* written by the kernel: how many it enrolled */
	struct nl_enrollment enrollment;
	struct nl_labels labels; /* the kernel sets level */
};

/*
 * nl_reported: cgroup id -> the losses the agent has already reported in gap
 * records that every durable sink has written, so a restarted agent reports
 * only what is new. Only the agent uses it. Each kind keeps the sequence its
 * last gap ended at: the next gap of that kind starts there, so a loss whose
 * counter moved after its sequence number was read still falls in a range.
 * Key 0 (no cgroup has that id) holds the losses not tied to a cgroup.
 */
struct nl_reported {
	__u64 throttled;
	__u64 ringbuf_lost;
	__u64 throttled_seq;	/* nl_cgroup_state.seq at the last throttled gap */
	__u64 ringbuf_lost_seq; /* nl_cgroup_state.seq at the last ringbuf_full gap */
	__u64 no_state;		/* key 0 only: nl_cpu_loss.no_state, summed over CPUs */
	__u64 dns_throttled;	    /* the same, for DNS records (their own sequence, dns_seq) */
	__u64 dns_ringbuf_lost;
	__u64 dns_throttled_seq;    /* nl_cgroup_state.dns_seq at the last dns_throttled gap */
	__u64 dns_ringbuf_lost_seq; /* nl_cgroup_state.dns_seq at the last dns_ringbuf_full gap */
};

/*
 * nl_meta[0]: the layout (JSON) every pinned map was written with, so a newer
 * agent can tell a reusable map from one whose layout changed under it.
 */
struct nl_meta {
	__u32 abi_version;
	__u32 len;
	char layout[4088];
};

/* ---- DNS: answers observed and addresses admitted (bpf/dns.bpf.c) ---- */

#define NL_DNS_PAYLOAD_MAX 1024 /* DNS message bytes copied into one record; power of two */
#define NL_DNS_NAME_MAX 248	/* bytes of a reversed name in an nl_domain_key */
#define NL_DNS_SLOTS 4		/* domain matches one admitted address can carry */
#define NL_DNS_ADDRS_MAX 4096	/* admitted addresses per enrolled cgroup (LRU) */
#define NL_DNS_QUERIES_MAX 1024 /* outstanding queries per enrolled cgroup (LRU) */
#define NL_DNS_SCRATCH_BYTES 4608 /* the parser's per-CPU memory (bpf/dns.bpf.c) */

enum nl_dns_verdict {
	NL_DNS_ADMITTED = 1,	/* a matching answer from a policy resolver: addresses admitted */
	NL_DNS_NOT_MATCHED = 2, /* a valid answer, but the question matches no domain rule */
	NL_DNS_UNSOLICITED = 3, /* no outstanding query matches (spoofed / late): nothing admitted */
	NL_DNS_FOREIGN = 4,	/* from a resolver the policy does not name: nothing admitted */
	NL_DNS_MALFORMED = 5,	/* the kernel parser gave up: nothing admitted */
};

enum nl_dns_flag {
	NL_DNS_FLAG_CUT = 1 << 0,	/* msg_len > payload_len: the record holds a prefix */
	NL_DNS_FLAG_TCP = 1 << 1,	/* seen on a TCP/53 stream (never: TCP is not parsed) */
	NL_DNS_FLAG_TRUNCATED = 1 << 2, /* the answer's TC bit was set: nothing admitted */
};

/* One DNS answer delivered to an enrolled cgroup; variable size. */
struct nl_dns_event {
	struct nl_hdr hdr; /* op = NL_OP_DNS; size = offsetof(payload) + payload_len */
	__u64 ts_ns;	   /* CLOCK_BOOTTIME, like nl_event.ts_ns */
	__u64 seq;	   /* per enrolled cgroup, its own DNS sequence (loss accounting) */
	__u64 cgroup_id;   /* the enrolled cgroup the answer was delivered to */
	__u64 sock_cookie; /* the receiving socket */
	__u32 policy_id;
	__u32 rule_id;	   /* the domain rule that matched, 0 when none */
	__u8 server[16];   /* the resolver that answered; IPv4 in the first four bytes */
	__u16 server_port; /* host order */
	__u16 family;	   /* AF_INET or AF_INET6: the form server holds */
	__u16 msg_len;	   /* the DNS message's length in the packet */
	__u16 payload_len; /* bytes of it that follow (<= NL_DNS_PAYLOAD_MAX) */
	__u16 admitted;	   /* addresses admitted into the cgroup's set by this answer */
	__u8 verdict;	   /* enum nl_dns_verdict */
	__u8 flags;	   /* enum nl_dns_flag */
	__u8 pad[4];
	__u8 payload[];	   /* the DNS message (header onwards), payload_len bytes */
};

/*
 * nl_domains (LPM trie): (policy, reversed name) -> what a question name
 * matches. The name is the lowercase dotted name with a leading dot, byte
 * reversed: ".api.github.com" -> "moc.buhtig.ipa.". An exact rule's key ends
 * in a NUL, so it matches that name only; a wildcard "*.github.com" is the
 * prefix "moc.buhtig." and matches every name below it. A query for the
 * wildcard's own base name also reaches that prefix: it takes apex_match_id.
 */
struct nl_domain_key {
	__u32 prefixlen; /* 32 + 8 * bytes of name that count */
	__u32 policy_id;
	__u8 name[NL_DNS_NAME_MAX];
};

struct nl_domain {
	__u32 match_id;	     /* nl_domain_ports key: the port rules this name admits for */
	__u32 apex_match_id; /* wildcard only: what its base name itself matches, 0 = nothing */
	__u16 name_len;	     /* bytes of the key's name */
	__u8 wildcard;
	__u8 pad;
};

/* nl_domain_ports: (policy, match id) -> the port rules of every domain rule
 * that matches such a name (an exact rule's and every covering wildcard's). */
struct nl_domain_ports_key {
	__u32 policy_id;
	__u32 match_id;
};

/* Per enrolled cgroup (nl_dns_admitted[cgroup] is an LRU of these):
 * address -> the domain matches it was admitted for, each with its expiry. */
struct nl_dns_addr_key {
	__u8 family; /* enum nl_family */
	__u8 pad[3];
	__u8 addr[16];
};

struct nl_dns_slot {
	__u64 expires_ns; /* CLOCK_BOOTTIME; only ever moved later */
	__u32 match_id;	  /* 0 = free */
	__u32 pad;
};

struct nl_dns_slots {
	struct nl_dns_slot slot[NL_DNS_SLOTS];
};

/* Per enrolled cgroup (nl_dns_queries[cgroup]): the queries awaiting an
 * answer. Socket, id and question survive the NAT in front of Docker's
 * embedded resolver; addresses and ports do not. */
struct nl_dns_query_key {
	__u64 sock_cookie;
	__u16 txid;
	__u16 qtype;
	__u32 pad;
};

struct nl_dns_query {
	__u64 qhash;  /* FNV-1a 64 of the lowercase dotted question name */
	__u64 ts_ns;  /* when it was sent */
};

/* The context the agent runs nl_flush_folds with: the cgroup to flush. */
/* Where nl_flush_ctx starts in nl_flush_folds' test packet: past an Ethernet header. */
enum nl_flush {
	NL_FLUSH_CTX_OFF = 14,
};

struct nl_flush_ctx {
	__u64 cgroup_id;
};

/* Loader-set constants (.rodata), fixed at load time. */
struct nl_config {
	__u64 allow_interval_ns;  /* 1e9 / allowed records per second per cgroup; 0 = no limit */
	__u64 allow_tolerance_ns; /* (burst - 1) * allow_interval_ns */
	__u64 wakeup_bytes;	  /* wake the agent once this much is waiting in the ring */
	__u64 dns_ttl_floor_ns;	  /* an admitted address lives at least this long */
	__u64 dns_ttl_cap_ns;	  /* and at most this long, whatever the TTL says */
	__u64 fold_window_ns;	  /* fold a decision repeated this soon after its record; 0 = never */
};

_Static_assert(NL_CIDR_PREFIX_BITS == 8 * (__builtin_offsetof(struct nl_cidr_key, addr) -
					   __builtin_offsetof(struct nl_cidr_key, policy_id)),
	       "a CIDR prefix covers policy_id and family before the address");

#endif /* NETLOGGER_H */
