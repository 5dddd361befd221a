// SPDX-License-Identifier: GPL-2.0
/*
 * vfs_read_trace.c: the vfs layer (`pyksm collect --layer vfs`).
 *
 * read_trace.c sees only reads that come in through a read syscall. This
 * program sits lower, on kernel functions reads pass through, so reads that
 * make no read syscall are seen as well: io_uring IORING_OP_READ/READV (QEMU
 * aio=io_uring), Linux AIO, and other users of the page cache with a user
 * buffer. It needs the kernel's own headers (struct iov_iter); written
 * against Linux 6.12.
 *
 * Two ways to hook the functions, chosen by the loader (same events, same
 * probe ids, same rules; the trace cannot tell them apart):
 *
 *   - kprobes (`vfs-kprobe`; default build): a kprobe at entry and a
 *     kretprobe at return of each function (CONFIG_KPROBES,
 *     CONFIG_KPROBE_EVENTS); entry remembers the destination per thread in
 *     `pending`, return emits;
 *   - BPF trampolines (`vfs-fentry`; -DTRAMPOLINES): fexit programs, plus
 *     fentry where a read must be marked (bcc's KRETFUNC_PROBE /
 *     KFUNC_PROBE; needs BTF and a kernel that lets tracing programs
 *     attach). An fexit program sees the arguments and the return value
 *     together, so every function emits from fexit alone (see the
 *     TRAMPOLINES section). Far cheaper for every other process on the
 *     machine than a kprobe + kretprobe.
 *
 * Functions (the loader attaches only those the kernel can trace,
 * WITH_<FUNCTION> selects them here):
 *
 *   vfs_read(file, buf, count, pos)          read(2), pread64(2)          id 7
 *   vfs_readv(file, vec, vlen, pos, flags)   readv, preadv, preadv2       id 8
 *   aio_read(kiocb, iocb, vectored, compat)  io_submit PREAD/PREADV       id 9
 *   filemap_read(iocb, iter, already_read)   any other page-cache read:   id 10
 *                                            io_uring READ/READV, ...
 *
 * One layer per read, so a read is never emitted twice: the first three are
 * "outer" probes; filemap_read (the page-cache copy under the read_iter of
 * ext4, xfs, btrfs, fuse, ramfs, netfs with a cache, block devices) emits
 * only when no outer read of the same thread is in flight. So read() of an
 * ext4 file is reported by vfs_read, never again by the filemap_read
 * beneath it, and filemap_read reports what reaches the page cache any
 * other way: io_uring (whose read path has no traceable function of its own
 * in 6.12: the one that calls ->read_iter, io_iter_do_read, is `static
 * inline`, so notrace), and AIO where aio_read is not probed. Outer probes
 * do not nest in 6.12 (no vfs_read under aio_read or vfs_readv, nor under
 * itself).
 *
 * Not seen: reads that make no read syscall and bypass the page cache:
 * io_uring with O_DIRECT (QEMU aio=io_uring,cache=none), io_uring on tmpfs
 * (shmem has its own read_iter) or on 9p/fuse without a page cache.
 *
 * Bytes: vfs_read, vfs_readv and filemap_read emit only the bytes really
 * read (the return value; filemap_read's minus already_read), walking the
 * destination from where it stood at entry. aio_read emits the requested
 * ranges, like read_trace.c's io_submit: it returns 0 for a queued and a
 * finished read alike, the real count goes to the AIO completion.
 *
 * filemap_read gets an iov_iter: ITER_UBUF (one user buffer) and ITER_IOVEC
 * (a kernel copy of the user's iovec array, plus iov_offset into its first
 * entry) are followed; kernel and page iterators (ITER_KVEC, ITER_BVEC:
 * kernel_read, splice, IORING_OP_READ_FIXED, loop devices) carry no user
 * address and are counted, not emitted. The iterator has moved on by the
 * time filemap_read returns: kprobes snapshot it at entry (`inner`),
 * fexit walks back over what it moved past.
 *
 * Same rules as read_trace.c: only tgids in `targets` (io_uring's io-wq
 * workers share their process's tgid), nothing shorter than MIN_BYTES, a
 * ring buffer that wakes only an idle reader. Cost: every call of a probed
 * function on the machine, target or not, runs the hook before this
 * program filters; a kretprobe also takes a return-hook instance per call
 * (the loader raises maxactive so threads sleeping in read() elsewhere do
 * not exhaust them: a missed return loses that read and leaves a stale
 * `pending` entry until the thread's next outer read). A trampoline has no
 * such limit.
 */
#include "read_common.h"
#include <uapi/linux/aio_abi.h>

enum dst_kind {
	DST_BUF = 1,  /* one user buffer */
	DST_UIOV = 2, /* an iovec array in user memory */
	DST_KIOV = 3, /* an iovec array in kernel memory (ITER_IOVEC) */
};

struct pending_read {
	u64 dst;   /* buffer, or iovec array */
	u64 off;   /* bytes of the first segment already consumed (iov_offset) */
	u64 want;  /* bytes requested (emitted for aio_read) */
	u64 skip;  /* filemap_read: already_read, part of its return value */
	u32 probe;
	u32 nsegs; /* iovec entries; 0 for a plain buffer */
	u32 kind;  /* enum dst_kind */
	u32 all;   /* aio_read PREADV: emit every iovec as requested */
};

#ifndef TRAMPOLINES
BPF_HASH(pending, u64, struct pending_read, 16384); /* outer reads in flight, per thread */
BPF_HASH(inner, u64, struct pending_read, 16384);   /* filemap_read with no outer read */
#endif

/*
 * Emit the first `n` bytes of r's destination. `kinds` is a constant mask
 * of what the calling probe can have (KIND_*): each iovec walk is
 * a loop of MAX_IOV steps that the verifier follows step by step, so every
 * program gets only the walks it needs, with user/kernel memory fixed.
 */
#define KIND_BUF (1 << DST_BUF)
#define KIND_UIOV (1 << DST_UIOV)
#define KIND_KIOV (1 << DST_KIOV)
#define KIND_ALL (1 << 8) /* aio_read PREADV: every iovec as requested */

static __always_inline void emit_dst(u32 tgid, struct pending_read *r, u64 n, u32 kinds)
{
	if ((kinds & KIND_ALL) && r->all) {
		/* one event per iovec, like read_trace.c's io_submit */
		for (int i = 0; i < MAX_IOV; i++) {
			if (i >= r->nsegs)
				break;
			struct iovec iov = {};
			if (bpf_probe_read_user(&iov, sizeof(iov),
						(void *)(r->dst + i * sizeof(iov))))
				break;
			if (iov.iov_len >= MIN_BYTES)
				emit(tgid, r->probe, (u64)iov.iov_base, iov.iov_len);
		}
		return;
	}
	if (n < MIN_BYTES) {
		if (n > 0)
			count(STAT_SHORT);
		return;
	}
	if ((kinds & KIND_BUF) && r->kind == DST_BUF) {
		emit(tgid, r->probe, r->dst + r->off, n);
		return;
	}
	if ((kinds & KIND_UIOV) && r->kind == DST_UIOV) {
		emit_iovecs(tgid, r->probe, r->dst, r->nsegs, n, 1); /* off is 0 */
		return;
	}
	if ((kinds & KIND_KIOV) && r->kind == DST_KIOV && r->nsegs > 0) {
		/* the first segment may be partly consumed (iov_offset) */
		struct iovec iov = {};
		if (bpf_probe_read_kernel(&iov, sizeof(iov), (void *)r->dst))
			return;
		u64 off = r->off < iov.iov_len ? r->off : iov.iov_len;
		u64 len = iov.iov_len - off;
		u64 take = len < n ? len : n;
		if (take)
			emit(tgid, r->probe, (u64)iov.iov_base + off, take);
		emit_iovecs(tgid, r->probe, r->dst + sizeof(iov), r->nsegs - 1, n - take, 0);
	}
}

/* Where an iov_iter points now: 0, or 1 (counted) if it has no user address. */
static __always_inline int from_iter(struct pending_read *p, const struct iov_iter *iter)
{
	struct iov_iter it = {};
	if (bpf_probe_read_kernel(&it, sizeof(it), iter))
		return 1;
	p->off = it.iov_offset;
	p->want = it.count;
	if (it.iter_type == ITER_UBUF) {
		p->kind = DST_BUF;
		p->dst = (u64)it.ubuf;
		return 0;
	}
	if (it.iter_type == ITER_IOVEC) {
		p->kind = DST_KIOV;
		p->dst = (u64)it.__iov;
		p->nsegs = (u32)it.nr_segs;
		return 0;
	}
	count(STAT_NOT_USER);
	return 1;
}

/*
 * The destination an outer read's arguments name; 0: nothing to report.
 * Shared by the kprobe entry (which remembers it) and fexit (which emits).
 */
static __always_inline int vfs_read_dst(struct pending_read *p, u64 buf, u64 count)
{
	if (count < MIN_BYTES)
		return 0;
	p->dst = buf;
	p->probe = PROBE_VFS_READ;
	p->kind = DST_BUF;
	return 1;
}

static __always_inline int vfs_readv_dst(struct pending_read *p, u64 vec, u64 vlen)
{
	p->dst = vec;
	p->nsegs = (u32)vlen;
	if (p->nsegs == 0)
		return 0;
	p->probe = PROBE_VFS_READV;
	p->kind = DST_UIOV;
	return 1;
}

/* fs/aio.c: iocb is the kernel's copy of the user's struct iocb */
static __always_inline int aio_read_dst(struct pending_read *p, u64 kiocb, u8 vectored)
{
	struct iocb cb = {};
	if (bpf_probe_read_kernel(&cb, sizeof(cb), (void *)kiocb))
		return 0;
	p->dst = cb.aio_buf;
	p->probe = PROBE_AIO_READ;
	if (vectored) {
		p->kind = DST_UIOV;
		p->nsegs = (u32)cb.aio_nbytes;
		p->all = 1;
		return p->nsegs != 0;
	}
	p->kind = DST_BUF;
	p->want = cb.aio_nbytes;
	return p->want >= MIN_BYTES;
}

/* An outer read returned `ret`: emit what it delivered. */
static __always_inline void outer_done(u32 tgid, struct pending_read *r, long ret, u32 kinds)
{
	u64 n;
	if (r->probe == PROBE_AIO_READ) {
		if (ret != 0)
			return;
		n = r->want;
	} else {
		if (ret <= 0)
			return;
		n = (u64)ret;
	}
	emit_dst(tgid, r, n, kinds);
}

#ifndef TRAMPOLINES
/* ---- kprobes: kprobe at entry, kretprobe at return -------------------- */

/* filemap_read's entry: snapshot the iterator, unless an outer read reports this one. */
static __always_inline void inner_enter(u64 id, u64 iter, u64 already_read)
{
	struct pending_read p = {};
	if (from_iter(&p, (const struct iov_iter *)iter))
		return;
	p.probe = PROBE_FILEMAP_READ;
	p.skip = already_read;
	inner.update(&id, &p);
}

static __always_inline void inner_exit(long ret)
{
	u64 id = bpf_get_current_pid_tgid();
	struct pending_read *p = inner.lookup(&id);
	if (!p)
		return;
	struct pending_read r = *p;
	inner.delete(&id);
	if (ret <= 0 || (u64)ret <= r.skip)
		return;
	emit_dst(id >> 32, &r, (u64)ret - r.skip, KIND_BUF | KIND_KIOV);
}

static __always_inline void remember(struct pending_read *p)
{
	u64 id = bpf_get_current_pid_tgid();
	pending.update(&id, p);
}

/* Return of an outer probe: emit what the read delivered. */
static __always_inline int outer_exit(struct pt_regs *ctx, u32 kinds)
{
	u64 id = bpf_get_current_pid_tgid();
	struct pending_read *p = pending.lookup(&id);
	if (!p)
		return 0;
	struct pending_read r = *p;
	pending.delete(&id);
	outer_done(id >> 32, &r, PT_REGS_RC(ctx), kinds);
	return 0;
}

#ifdef WITH_VFS_READ
int vfs_read_enter(struct pt_regs *ctx)
{
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct pending_read p = {};
	if (vfs_read_dst(&p, PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx)))
		remember(&p);
	return 0;
}
int vfs_read_exit(struct pt_regs *ctx)
{
	return outer_exit(ctx, KIND_BUF);
}
#endif

#ifdef WITH_VFS_READV
int vfs_readv_enter(struct pt_regs *ctx)
{
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct pending_read p = {};
	if (vfs_readv_dst(&p, PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx)))
		remember(&p);
	return 0;
}
int vfs_readv_exit(struct pt_regs *ctx)
{
	return outer_exit(ctx, KIND_UIOV);
}
#endif

#ifdef WITH_AIO_READ
int aio_read_enter(struct pt_regs *ctx)
{
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct pending_read p = {};
	if (aio_read_dst(&p, PT_REGS_PARM2(ctx), (u8)PT_REGS_PARM3(ctx)))
		remember(&p);
	return 0;
}
int aio_read_exit(struct pt_regs *ctx)
{
	return outer_exit(ctx, KIND_BUF | KIND_ALL);
}
#endif

#ifdef WITH_FILEMAP_READ
int filemap_read_enter(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!is_target(id >> 32))
		return 0;
	if (pending.lookup(&id))
		return 0; /* an outer probe reports this read */
	inner_enter(id, PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx));
	return 0;
}
int filemap_read_exit(struct pt_regs *ctx)
{
	inner_exit(PT_REGS_RC(ctx));
	return 0;
}
#endif

#else /* TRAMPOLINES */
/*
 * ---- BPF trampolines: fexit (and fentry where a read must be marked) ----
 *
 * Arguments are declared u64 (the trampoline passes each as one 64-bit
 * slot) and narrowed where the kernel's type is narrower; the kernel's
 * prototypes are in the table at the top. A non-target's read runs two
 * programs: vfs_read's (or vfs_readv's) fexit and filemap_read's fexit.
 *
 * filemap_read has no entry program: when it returns, its iterator stands
 * just past the bytes it copied (ret - already_read), so emit_copied()
 * finds those ranges walking back from there (6.12's iterate_ubuf and
 * iterate_iovec only move forward; filemap_read never reverts).
 *
 * Which filemap_read calls an outer probe reports, without marking every
 * read: vfs_read and vfs_readv read through a synchronous kiocb
 * (init_sync_kiocb: ki_complete == NULL), io_uring and AIO set ki_complete.
 * In 6.12 a synchronous kiocb with a user iterator reaches filemap_read
 * only under vfs_read or vfs_readv (overlayfs and fuse passthrough hand a
 * synchronous read on through vfs_iter_read, still under the outer
 * vfs_read; kernel_read, splice, loop and nfsd use kernel iterators). So
 * with both probed, filemap_read skips synchronous kiocbs (SYNC_IS_OUTER).
 * Reads the kiocb cannot tell apart are marked per thread in `outer` at
 * fentry and unmarked at fexit: AIO under aio_read, and vfs_read or
 * vfs_readv when only one of the two is probed. The loader's _hooks()
 * follows the same rules.
 */
#ifdef WITH_FILEMAP_READ
#if defined(WITH_VFS_READ) && defined(WITH_VFS_READV)
#define SYNC_IS_OUTER 1
#else
#ifdef WITH_VFS_READ
#define MARK_VFS_READ 1
#endif
#ifdef WITH_VFS_READV
#define MARK_VFS_READV 1
#endif
#endif
#ifdef WITH_AIO_READ
#define MARK_AIO_READ 1
#endif
#endif
#if defined(MARK_VFS_READ) || defined(MARK_VFS_READV) || defined(MARK_AIO_READ)
#define MARK_OUTER 1
BPF_HASH(outer, u64, u32, 16384); /* threads inside a marked outer read of a target */

static __always_inline int mark_outer(void)
{
	u64 id = bpf_get_current_pid_tgid();
	if (is_target(id >> 32)) {
		u32 one = 1;
		outer.update(&id, &one);
	}
	return 0;
}

/* fexit of a marked read: it reports if it was marked (a target at entry) */
static __always_inline int unmark_outer(u64 id)
{
	if (!outer.lookup(&id))
		return 0;
	outer.delete(&id);
	return 1;
}
#endif

#ifdef WITH_VFS_READ
#ifdef MARK_VFS_READ
KFUNC_PROBE(vfs_read, u64 file, u64 buf, u64 count, u64 pos)
{
	return mark_outer();
}
#endif
KRETFUNC_PROBE(vfs_read, u64 file, u64 buf, u64 count, u64 pos, long ret)
{
	u64 id = bpf_get_current_pid_tgid();
#ifdef MARK_VFS_READ
	if (!unmark_outer(id))
		return 0;
#else
	if (!is_target(id >> 32))
		return 0;
#endif
	struct pending_read r = {};
	if (vfs_read_dst(&r, buf, count))
		outer_done(id >> 32, &r, ret, KIND_BUF);
	return 0;
}
#endif

#ifdef WITH_VFS_READV
#ifdef MARK_VFS_READV
KFUNC_PROBE(vfs_readv, u64 file, u64 vec, u64 vlen, u64 pos, u64 flags)
{
	return mark_outer();
}
#endif
KRETFUNC_PROBE(vfs_readv, u64 file, u64 vec, u64 vlen, u64 pos, u64 flags, long ret)
{
	u64 id = bpf_get_current_pid_tgid();
#ifdef MARK_VFS_READV
	if (!unmark_outer(id))
		return 0;
#else
	if (!is_target(id >> 32))
		return 0;
#endif
	struct pending_read r = {};
	if (vfs_readv_dst(&r, vec, vlen))
		outer_done(id >> 32, &r, ret, KIND_UIOV);
	return 0;
}
#endif

#ifdef WITH_AIO_READ
#ifdef MARK_AIO_READ
KFUNC_PROBE(aio_read, u64 req, u64 iocb, u64 vectored, u64 compat)
{
	return mark_outer();
}
#endif
/* iocb is still the caller's (io_submit_one's) copy when aio_read returns */
KRETFUNC_PROBE(aio_read, u64 req, u64 iocb, u64 vectored, u64 compat, long ret)
{
	u64 id = bpf_get_current_pid_tgid();
#ifdef MARK_AIO_READ
	if (!unmark_outer(id))
		return 0;
#else
	if (!is_target(id >> 32))
		return 0;
#endif
	struct pending_read r = {};
	if (aio_read_dst(&r, iocb, (u8)vectored))
		outer_done(id >> 32, &r, (int)ret, KIND_BUF | KIND_ALL);
	return 0;
}
#endif

#ifdef WITH_FILEMAP_READ
/*
 * The last `n` bytes an iterator moved over, as ranges (one per iovec),
 * found walking back from where it stands now.
 */
static __always_inline void emit_copied(u32 tgid, u64 iter, u64 n)
{
	struct iov_iter it = {};
	if (bpf_probe_read_kernel(&it, sizeof(it), (void *)iter))
		return;
	if (it.iter_type == ITER_UBUF) {
		if (it.iov_offset < n) {
			count(STAT_IOV_CUT);
			return;
		}
		emit(tgid, PROBE_FILEMAP_READ, (u64)it.ubuf + it.iov_offset - n, n);
		return;
	}
	if (it.iter_type != ITER_IOVEC) {
		count(STAT_NOT_USER);
		return;
	}
	/* The current iovec: its first iov_offset bytes are consumed. */
	u64 vec = (u64)it.__iov;
	u64 left = n;
	struct iovec iov = {};
	if (it.iov_offset) {
		if (bpf_probe_read_kernel(&iov, sizeof(iov), (void *)vec))
			return;
		u64 take = it.iov_offset < left ? it.iov_offset : left;
		emit(tgid, PROBE_FILEMAP_READ, (u64)iov.iov_base + it.iov_offset - take, take);
		left -= take;
	}
	/* Earlier iovecs, consumed whole (the first one maybe only at its end). */
	for (int i = 1; i < MAX_IOV; i++) {
		if (left == 0)
			break;
		if (bpf_probe_read_kernel(&iov, sizeof(iov), (void *)(vec - i * sizeof(iov))))
			break;
		u64 take = iov.iov_len < left ? iov.iov_len : left;
		if (take)
			emit(tgid, PROBE_FILEMAP_READ, (u64)iov.iov_base + iov.iov_len - take, take);
		left -= take;
	}
	if (left)
		count(STAT_IOV_CUT);
}

KRETFUNC_PROBE(filemap_read, u64 iocb, u64 iter, u64 already_read, long ret)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!is_target(id >> 32))
		return 0;
	if (ret <= 0 || (u64)ret <= already_read)
		return 0;
#ifdef MARK_OUTER
	if (outer.lookup(&id))
		return 0; /* a marked outer probe reports this read */
#endif
#ifdef SYNC_IS_OUTER
	u64 complete = 0;
	if (bpf_probe_read_kernel(&complete, sizeof(complete),
				  &((struct kiocb *)iocb)->ki_complete))
		return 0;
	if (!complete)
		return 0; /* synchronous: vfs_read or vfs_readv reports it */
#endif
	u64 n = (u64)ret - already_read;
	if (n < MIN_BYTES) {
		count(STAT_SHORT);
		return 0;
	}
	emit_copied(id >> 32, iter, n);
	return 0;
}
#endif
#endif /* TRAMPOLINES */
