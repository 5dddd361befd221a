// SPDX-License-Identifier: GPL-2.0
/*
 * ksmd_visits.c: where does ksmd's time go, visit by visit?
 *
 * Loaded by pyksm/probes/ksmd_visits.py with bcc on a kernel with the KSM++
 * series (kprobes on static functions of mm/ksm.c). Only ksmd calls the
 * probed functions, one at a time (ksm_thread_mutex), so one set of slots
 * holds the visit in progress.
 *
 * A visit is one cmp_and_merge_page() call, of one of three classes:
 *   0  hinted: its flags carry KSM_CMP_HINT (ksm_hint_visit());
 *   1  linear, of a page a hint put in this round's hint tree: its
 *      rmap_item's address carries UNSTABLE_FLAG | HINT_TREE_FLAG and the
 *      seqnr of this round (the kernel's in_hint_tree(): an item left in
 *      last round's hint tree carries the flags too, but is linear);
 *   2  linear, any other page.
 * Per (class, result) the program sums calls and nanoseconds, and before
 * a hinted visit it times the lookup of the page's rmap_item
 * (ksm_hint_rmap_item()).  Where the compiler kept unstable_tree_walk()
 * out of line (a series whose hint tree was a second unstable tree), the
 * loader also attaches walk_enter/walk_return, which time each walk by the
 * root it walks.
 *
 * Defines set by the loader: HINT_ROOT (the address of one_hint_tree, the
 * hint tree's root without NUMA node roots), KSM_SCAN (the address of
 * ksm_scan, for its seqnr).
 */
#include <uapi/linux/ptrace.h>
#include <linux/types.h>

#define KSM_CMP_HINT 0x2
#define UNSTABLE_FLAG 0x100
#define HINT_TREE_FLAG 0x400

/* mm/ksm.c's struct ksm_rmap_item up to the field read here */
struct rmap_item_head {
	void *rmap_list;
	void *anon_vma;
	void *mm;
	unsigned long address;
};

/* mm/ksm.c's struct ksm_scan */
struct ksm_scan_head {
	void *mm_slot;
	unsigned long address;
	void *rmap_list;
	unsigned long seqnr;
};

#define SEQNR_MASK 0xff

/* what: a visit's result (0..15), or one of these parts */
#define PART_HINT_WALK 16
#define PART_UNSTABLE_WALK 17
#define PART_LOOKUP 18

struct key {
	u32 cls;
	u32 what;
};

struct cost {
	u64 calls;
	u64 ns;
};

BPF_HASH(costs, struct key, struct cost, 128);

/* slots: visit start, its class, walk start, its root, lookup start */
enum { S_VISIT, S_CLASS, S_WALK, S_ROOT, S_LOOKUP, NR_SLOTS };
BPF_ARRAY(slot, u64, NR_SLOTS);

static inline u64 slot_get(int i)
{
	u64 *v = slot.lookup(&i);

	return v ? *v : 0;
}

static inline void slot_put(int i, u64 value)
{
	slot.update(&i, &value);
}

static inline void cost_add(u32 cls, u32 what, u64 start)
{
	struct key k = { .cls = cls, .what = what };
	struct cost zero = {};
	struct cost *c;

	if (!start)
		return;
	c = costs.lookup_or_try_init(&k, &zero);
	if (c) {
		__sync_fetch_and_add(&c->calls, 1);
		__sync_fetch_and_add(&c->ns, bpf_ktime_get_ns() - start);
	}
}

int visit_enter(struct pt_regs *ctx, void *page, struct rmap_item_head *item,
		unsigned int flags)
{
	struct ksm_scan_head *scan = (struct ksm_scan_head *)KSM_SCAN;
	unsigned long address = 0, seqnr = 0;
	u64 cls = 2;

	bpf_probe_read_kernel(&address, sizeof(address), &item->address);
	bpf_probe_read_kernel(&seqnr, sizeof(seqnr), &scan->seqnr);
	if (flags & KSM_CMP_HINT)
		cls = 0;
	else if ((address & (UNSTABLE_FLAG | HINT_TREE_FLAG)) ==
		 (UNSTABLE_FLAG | HINT_TREE_FLAG) &&
		 !((seqnr - address) & SEQNR_MASK))
		cls = 1;
	slot_put(S_CLASS, cls);
	slot_put(S_VISIT, bpf_ktime_get_ns());
	return 0;
}

int visit_return(struct pt_regs *ctx)
{
	cost_add(slot_get(S_CLASS), PT_REGS_RC(ctx) & 0xf, slot_get(S_VISIT));
	slot_put(S_VISIT, 0);
	return 0;
}

int walk_enter(struct pt_regs *ctx)
{
	slot_put(S_ROOT, PT_REGS_PARM1(ctx));
	slot_put(S_WALK, bpf_ktime_get_ns());
	return 0;
}

int walk_return(struct pt_regs *ctx)
{
	u32 what = PART_UNSTABLE_WALK;

	if (slot_get(S_ROOT) == HINT_ROOT)
		what = PART_HINT_WALK;
	if (slot_get(S_VISIT))
		cost_add(slot_get(S_CLASS), what, slot_get(S_WALK));
	slot_put(S_WALK, 0);
	return 0;
}

int lookup_enter(struct pt_regs *ctx)
{
	slot_put(S_LOOKUP, bpf_ktime_get_ns());
	return 0;
}

int lookup_return(struct pt_regs *ctx)
{
	cost_add(0, PART_LOOKUP, slot_get(S_LOOKUP));
	slot_put(S_LOOKUP, 0);
	return 0;
}
