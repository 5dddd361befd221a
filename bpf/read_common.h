// SPDX-License-Identifier: GPL-2.0
/*
 * read_common.h: what read_trace.c (syscall tracepoints) and
 * vfs_read_trace.c (kprobes) share: the event, the probe ids, the maps user
 * space reads (targets, stats, events) and the emit helpers.
 *
 * pyksm/probes/loader.py inlines this file where a program includes it, so
 * bcc compiles (and `pyksm collect --ebpf` prints) one self-contained text.
 *
 * Defines set by the loader: MIN_BYTES, MAX_IOV, RINGBUF_PAGES, ALL_TGIDS.
 */
#include <uapi/linux/ptrace.h>
#include <linux/uio.h>

/*
 * Probe ids: the hint-trace format stores these (pyksm/collect/tracefile.py,
 * PROBE_NAMES in pyksm/probes/loader.py). Append only; never renumber.
 */
#define PROBE_READ 1         /* syscalls layer */
#define PROBE_PREAD64 2
#define PROBE_READV 3
#define PROBE_PREADV 4
#define PROBE_PREADV2 5
#define PROBE_IO_SUBMIT 6
#define PROBE_VFS_READ 7     /* vfs layer */
#define PROBE_VFS_READV 8
#define PROBE_AIO_READ 9
#define PROBE_FILEMAP_READ 10

/* stats slots (STAT_NAMES in loader.py) */
#define STAT_EMITTED 0
#define STAT_RINGBUF_FULL 1
#define STAT_SHORT 2         /* read fewer than MIN_BYTES */
#define STAT_IOV_CUT 3       /* more bytes than the iovecs walked (MAX_IOV) */
#define STAT_NOT_USER 4      /* vfs layer: kernel/bvec iterator, no user address */

struct read_event {
	u64 ts_ns;  /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	u32 tgid;
	u32 probe;
	u64 start;
	u64 len;
};

/*
 * The targets: one bit per tgid (bit tgid % 64 of word tgid / 64), for every
 * tgid Linux can hand out (PID_MAX_LIMIT, 4 Mi on 64-bit: 512 KiB). Every
 * probe on the machine asks this first, target or not, and an array lookup
 * is inlined by the verifier: no helper call, no hashing (a hash map of
 * tgids cost the vfs layer 3 % of a non-target's 4 KiB read() loop). User
 * space (ReadProbes.set_targets) writes whole words.
 */
#define TGID_WORDS (4194304 / 64)
BPF_ARRAY(targets, u64, TGID_WORDS);
BPF_ARRAY(stats, u64, 5);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline void count(int idx)
{
	u64 *v = stats.lookup(&idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int is_target(u32 tgid)
{
#ifdef ALL_TGIDS
	return 1;
#else
	u32 w = tgid >> 6;
	u64 *bits = targets.lookup(&w);
	return bits && ((*bits >> (tgid & 63)) & 1);
#endif
}

static __always_inline void emit(u32 tgid, u32 probe, u64 start, u64 len)
{
	struct read_event *e = events.ringbuf_reserve(sizeof(*e));
	if (!e) {
		count(STAT_RINGBUF_FULL);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->tgid = tgid;
	e->probe = probe;
	e->start = start;
	e->len = len;
	/* Adaptive wakeup: only the first event after a drain wakes a poller. */
	events.ringbuf_submit(e, 0);
	count(STAT_EMITTED);
}

/*
 * One event per iovec of the array at `vec` (n entries, in user memory when
 * `user`, else a kernel copy), covering `left` bytes in all (the bytes
 * really read). The verifier follows the loop step by step, so its body
 * stays small: no per-step special cases.
 */
static __always_inline void emit_iovecs(u32 tgid, u32 probe, u64 vec, u32 n, u64 left, int user)
{
	/* A constant bound for the verifier, as well as the runtime count. */
	for (int i = 0; i < MAX_IOV; i++) {
		if (i >= n || left == 0)
			break;
		struct iovec iov = {};
		void *src = (void *)(vec + i * sizeof(iov));
		int err = user ? bpf_probe_read_user(&iov, sizeof(iov), src)
			       : bpf_probe_read_kernel(&iov, sizeof(iov), src);
		if (err)
			break;
		u64 take = iov.iov_len < left ? iov.iov_len : left;
		if (take)
			emit(tgid, probe, (u64)iov.iov_base, take);
		left -= take;
	}
	if (left)
		count(STAT_IOV_CUT);
}
