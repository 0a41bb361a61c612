// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0-only)
/*
 * The one place a decision becomes a ring record. Every decision of an
 * enrolled cgroup takes a sequence number first, so the agent can prove what
 * it missed: each one is either submitted, folded into a later record, or
 * counted as throttled or as lost to a full ring.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "emit.bpf.h"
#include "maps.bpf.h"

/* Ring bytes one record takes: its 8-byte header and the record, 8-aligned. */
#define NL_RECORD_SPAN ((sizeof(struct nl_event) + 8 + 7) & ~7UL)

static __always_inline void nl_submit(struct nl_event *e)
{
	/* A wakeup is an IPI: it costs several times the record (3 us measured in
	 * a VM). Wake the agent only when this record makes the waiting data cross
	 * the threshold; the agent polls on a short timeout for everything else. */
	__u64 waiting = bpf_ringbuf_query(&nl_events, BPF_RB_AVAIL_DATA);
	__u64 crossing = waiting >= nl_cfg.wakeup_bytes &&
			 waiting - NL_RECORD_SPAN < nl_cfg.wakeup_bytes;
	bpf_ringbuf_submit(e, crossing ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}


/* `st` may be 0 (a flush for a cgroup whose state is gone): the CPU's count still has it. */
static __always_inline void nl_count_ring_loss(struct nl_cgroup_state *st, __u64 n)
{
	if (st)
		__sync_fetch_and_add(&st->ringbuf_lost, n);
	struct nl_cpu_loss *loss = nl_cpu_loss_slot();
	if (loss)
		loss->ringbuf_lost += n;
}

/*
 * Folding. A decision that repeats within nl_cfg.fold_window_ns of its last
 * record is counted in its cgroup's nl_folds slot instead of written. The
 * next record of that decision (once the window has passed), or a flush
 * (nl_flush_folds, which the agent runs at least once a second and on stop),
 * carries the count: a record stands for repeat_count decisions, the last of
 * which is its own. A record the ring has no room for goes back into its
 * slot. Every transition happens under the cgroup's fold lock, so each repeat
 * is counted exactly once: in a slot, in a record, or as lost.
 */

/* Repeats a record carries: taken out of a slot under its lock. */
struct nl_carry {
	__u64 first_ns;
	__u64 seq_first;
	__u32 count;
};

static __always_inline int nl_key_eq(const struct nl_fold_key *a, const struct nl_fold_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline void nl_take(struct nl_fold_slot *s, struct nl_carry *c)
{
	c->first_ns = s->first_ns;
	c->seq_first = s->seq_first;
	c->count = s->count;
	s->count = 0;
}

/* Write a slot's pending repeats as one record (its last record, re-stamped);
 * false when the ring is full, and then they are counted as lost. */
static __always_inline void nl_emit_carried(struct nl_cgroup_state *st, const struct nl_event *last,
					    const struct nl_carry *c, __u64 last_ns, __u64 seq_last)
{
	struct nl_event *e = bpf_ringbuf_reserve(&nl_events, sizeof(*e), 0);
	if (!e) {
		nl_count_ring_loss(st, c->count);
		return;
	}
	__builtin_memcpy(e, last, sizeof(*e));
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->ts_ns = last_ns;
	e->seq = seq_last;
	e->repeat_first_ns = c->first_ns;
	e->repeat_seq_first = c->seq_first;
	e->repeat_count = c->count;
	nl_submit(e);
}

enum nl_fold_result {
	NL_FOLD_NONE,	  /* write the record; nothing to keep */
	NL_FOLD_FOLDED,	  /* counted in a slot: no record */
	NL_FOLD_RECORD,	  /* write the record, carrying `carry`, and keep it in slot `idx` */
};

struct nl_fold_op {
	struct nl_carry carry;	      /* repeats the record carries */
	struct nl_carry evicted;      /* repeats of the decision whose slot this one took */
	__u32 idx;
};

/* Find the decision's slot (or take the stalest one) and fold or not. `evicted`
 * comes back with the repeats of a stale decision whose slot was taken; its
 * last record is copied to `evicted_last`. */
static __always_inline int nl_fold(struct nl_folds *f, const struct nl_fold_key *key, __u64 now,
				   __u64 seq, struct nl_fold_op *op, struct nl_event *evicted_last,
				   __u64 *evicted_last_ns, __u64 *evicted_seq_last)
{
	__u64 window = nl_cfg.fold_window_ns;
	int result = NL_FOLD_NONE;
	bpf_spin_lock(&f->lock);
	__u32 found = NL_FOLD_SLOTS, stalest = 0;
	__u64 stalest_ns = ~0ULL;
#pragma unroll
	for (__u32 i = 0; i < NL_FOLD_SLOTS; i++) {
		struct nl_fold_slot *s = &f->slots[i];
		if (found == NL_FOLD_SLOTS && nl_key_eq(&s->key, key))
			found = i;
		if (s->last_record_ns < stalest_ns) {
			stalest_ns = s->last_record_ns;
			stalest = i;
		}
	}
	if (found < NL_FOLD_SLOTS) {
		struct nl_fold_slot *s = &f->slots[found];
		if (s->ready && now - s->last_record_ns < window) {
			if (!s->count) {
				s->first_ns = now;
				s->seq_first = seq;
			}
			s->count++;
			s->last_ns = now;
			s->seq_last = seq;
			result = NL_FOLD_FOLDED;
		} else {
			nl_take(s, &op->carry);
			s->last_record_ns = now;
			op->idx = found;
			result = NL_FOLD_RECORD;
		}
	} else if (stalest < NL_FOLD_SLOTS) {
		struct nl_fold_slot *s = &f->slots[stalest];
		/* Every slot busy with a live decision: this one goes unfolded. */
		if (!s->count || (s->ready && now - s->last_record_ns >= window)) {
			nl_take(s, &op->evicted);
			if (op->evicted.count) {
				__builtin_memcpy(evicted_last, &s->last, sizeof(*evicted_last));
				*evicted_last_ns = s->last_ns;
				*evicted_seq_last = s->seq_last;
			}
			s->key = *key;
			s->ready = 0;
			s->last_record_ns = now;
			op->idx = stalest;
			result = NL_FOLD_RECORD;
		}
	}
	bpf_spin_unlock(&f->lock);
	return result;
}

/* The record just filled is the decision's last: a flush copies it. */
static __always_inline void nl_keep_last(struct nl_folds *f, __u32 idx, const struct nl_fold_key *key,
					 const struct nl_event *e)
{
	if (idx >= NL_FOLD_SLOTS)
		return;
	bpf_spin_lock(&f->lock);
	struct nl_fold_slot *s = &f->slots[idx];
	if (nl_key_eq(&s->key, key)) {
		__builtin_memcpy(&s->last, e, sizeof(s->last));
		s->ready = 1;
	}
	bpf_spin_unlock(&f->lock);
}

/* A record the ring had no room for goes back into its decision's slot, for
 * the next record of the decision or a flush to carry: while the slot holds
 * a record to copy (`ready`), a full ring costs a folded decision nothing.
 * 1 when it went back; else the caller counts it as lost. */
static __always_inline int nl_fold_back(struct nl_folds *f, __u32 idx, const struct nl_fold_key *key,
					const struct nl_carry *c, __u64 now, __u64 seq)
{
	if (idx >= NL_FOLD_SLOTS)
		return 0;
	int back = 0;
	bpf_spin_lock(&f->lock);
	struct nl_fold_slot *s = &f->slots[idx];
	if (s->ready && nl_key_eq(&s->key, key)) {
		/* Repeats folded since (other CPUs) came after this one. */
		if (!s->count) {
			s->last_ns = now;
			s->seq_last = seq;
		}
		s->first_ns = c->count ? c->first_ns : now;
		s->seq_first = c->count ? c->seq_first : seq;
		s->count += 1 + c->count;
		back = 1;
	}
	bpf_spin_unlock(&f->lock);
	return back;
}

static __always_inline void nl_fold_key_of(struct nl_fold_key *k, const struct nl_subject *subj,
					   const struct nl_dst *dst, const struct nl_verdict *v,
					   __u32 tgid)
{
	__builtin_memcpy(k->daddr, dst->asked, sizeof(k->daddr));
	if (dst->flags & NL_FLAG_NO_DST) /* no address: the socket's family stands there */
		__builtin_memcpy(k->daddr, &dst->asked_family, sizeof(dst->asked_family));
	k->tgid = tgid;
	k->rule_id = v->rule_id;
	k->dport = dst->port;
	k->verdict = v->action | v->mode << 2 | subj->op << 4;
	k->reason = v->reason;
	k->flags = v->flags | dst->flags;
	k->sock_type = (__u8)subj->sock_type;
	k->protocol = subj->protocol;
}

/* Where a reserved record's decision is folded, for nl_commit. */
struct nl_fold_pending {
	struct nl_folds *f; /* 0: not folded */
	struct nl_fold_key key;
	__u32 idx;
};

/* Takes the record's sequence number first, then folds the decision or
 * reserves a ring slot holding it; 0 when the record is folded, or counted as
 * throttled or lost instead. `limited`: whether the token bucket may drop it;
 * `tgid`: the task's, 0 outside a task's context. The task fields are zero
 * here: only hooks that run in the task's context (nl_emit) know them. The
 * caller hands the filled record to nl_commit. */
static __always_inline struct nl_event *nl_reserve(const struct nl_subject *subj,
						   const struct nl_dst *dst,
						   const struct nl_verdict *v, __u64 now,
						   int limited, __u32 tgid, struct nl_fold_pending *p)
{
	p->f = 0;
	p->idx = NL_FOLD_SLOTS;
	struct nl_cgroup_state *st = nl_state_of(subj->cgroup_id);
	if (!st) {
		struct nl_cpu_loss *loss = nl_cpu_loss_slot();
		if (loss)
			loss->no_state++;
		return 0;
	}
	__u64 seq = __sync_fetch_and_add(&st->seq, 1);

	struct nl_fold_op op = { .carry = { .count = 0 }, .idx = NL_FOLD_SLOTS };
	if (nl_cfg.fold_window_ns) {
		/* The agent makes the entry on enroll; without one, nothing folds. */
		/* A key on this stack: 6.1 takes no argument memory as a map key. */
		__u64 cgroup_id = subj->cgroup_id;
		struct nl_folds *f = bpf_map_lookup_elem(&nl_folds, &cgroup_id);
		if (f) {
			struct nl_event evicted_last;
			__u64 evicted_last_ns = 0, evicted_seq_last = 0;
			nl_fold_key_of(&p->key, subj, dst, v, tgid);
			int folded = nl_fold(f, &p->key, now, seq, &op, &evicted_last,
					     &evicted_last_ns, &evicted_seq_last);
			if (folded == NL_FOLD_FOLDED)
				return 0;
			if (op.evicted.count)
				nl_emit_carried(st, &evicted_last, &op.evicted, evicted_last_ns,
						evicted_seq_last);
			p->f = f;
			p->idx = op.idx;
		}
	}
	__u64 stands_for = 1 + op.carry.count;

	if (limited && !nl_take_token(&st->tat_ns, now)) {
		__sync_fetch_and_add(&st->throttled, stands_for);
		return 0;
	}

	struct nl_event *e = bpf_ringbuf_reserve(&nl_events, sizeof(*e), 0);
	if (!e) {
		if (!p->f || !nl_fold_back(p->f, p->idx, &p->key, &op.carry, now, seq))
			nl_count_ring_loss(st, stands_for);
		return 0;
	}
	e->hdr.op = subj->op;
	e->hdr.version = NL_ABI_VERSION;
	e->hdr.size = sizeof(*e);
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->ts_ns = now;
	e->seq = seq;
	e->cgroup_id = subj->cgroup_id;
	e->task_cgroup_id = 0;
	e->sock_cookie = subj->sock_cookie;
	e->repeat_first_ns = op.carry.count ? op.carry.first_ns : now;
	e->repeat_seq_first = op.carry.count ? op.carry.seq_first : seq;
	e->pid = 0;
	e->tid = 0;
	e->uid = 0;
	e->gid = 0;
	e->repeat_count = stands_for;
	e->rule_id = v->rule_id;
	e->policy_id = v->policy_id;
	__builtin_memcpy(e->daddr, dst->asked, sizeof(e->daddr));
	e->dport = dst->port;
	e->family = dst->asked_family;
	e->sock_type = subj->sock_type;
	e->protocol = subj->protocol;
	e->action = v->action;
	e->mode = v->mode;
	e->reason = v->reason;
	e->flags = v->flags | dst->flags;
	__builtin_memset(e->comm, 0, sizeof(e->comm));
	return e;
}

/* Submit a record nl_reserve gave; a folded decision's slot keeps a copy. */
static __always_inline void nl_commit(struct nl_event *e, const struct nl_fold_pending *p)
{
	if (p->f)
		nl_keep_last(p->f, p->idx, &p->key, e);
	nl_submit(e);
}

/* The verifier treats a global function's pointer arguments as possibly NULL. */
__noinline int nl_emit(const struct nl_subject *subj, const struct nl_dst *dst,
		       const struct nl_verdict *v, __u64 now)
{
	if (!subj || !dst || !v)
		return 0;
	/* Only plain allowed records are throttled: denies, bypasses and
	 * audit would-denies are the records someone will look for. */
	int plain_allow = v->action == NL_ACTION_ALLOWED && !(v->flags & NL_FLAG_WOULD_DENY);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct nl_fold_pending p = {};
	struct nl_event *e = nl_reserve(subj, dst, v, now, plain_allow, pid_tgid >> 32, &p);
	if (!e)
		return 0;
	__u64 uid_gid = bpf_get_current_uid_gid();
	e->task_cgroup_id = bpf_get_current_cgroup_id();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	nl_commit(e, &p);
	return 1;
}

__noinline int nl_emit_packet(const struct nl_subject *subj, const struct nl_dst *dst,
			      const struct nl_verdict *v, __u64 now)
{
	if (!subj || !dst || !v)
		return 0;
	struct nl_fold_pending p = {};
	struct nl_event *e = nl_reserve(subj, dst, v, now, 1, 0, &p);
	if (!e)
		return 0;
	e->task_cgroup_id = subj->cgroup_id;
	nl_commit(e, &p);
	return 1;
}

/* One cgroup's pending repeats, each slot written as one record (the flush). */
static __always_inline void nl_flush_cgroup(__u64 cgroup_id, struct nl_folds *f)
{
	struct nl_cgroup_state *st = bpf_map_lookup_elem(&nl_cgroup_state, &cgroup_id);
	for (__u32 i = 0; i < NL_FOLD_SLOTS; i++) {
		struct nl_event last;
		struct nl_carry c = {};
		__u64 last_ns = 0, seq_last = 0;
		bpf_spin_lock(&f->lock);
		struct nl_fold_slot *s = &f->slots[i];
		if (s->count && s->ready) {
			nl_take(s, &c);
			last_ns = s->last_ns;
			seq_last = s->seq_last;
			__builtin_memcpy(&last, &s->last, sizeof(last));
		}
		bpf_spin_unlock(&f->lock);
		if (c.count)
			nl_emit_carried(st, &last, &c, last_ns, seq_last);
	}
}

/* The flush of folded repeats: the agent runs this program
 * (BPF_PROG_TEST_RUN) at least once a second and when it stops, so a repeat
 * folded after a decision's last record reaches the ring even when the
 * decision is never made again. It runs in the kernel for the fold lock: the
 * agent cannot take a slot's count atomically from user space. One run
 * flushes the cgroup the agent names: a struct nl_flush_ctx after an Ethernet
 * header's worth of zeros in the test packet. A tc program, not a syscall one:
 * syscall programs are sleepable, and 6.1 refuses bpf_spin_lock in those.
 */
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
