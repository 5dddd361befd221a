// SPDX-License-Identifier: GPL-2.0
/*
 * vfs_read_trace.c: the kprobe layer (`pyksm collect --layer vfs`).
 *
 * read_trace.c sees only reads that come in through a read syscall. This
 * program sits lower, on kernel functions reads pass through, so reads that
 * make no read syscall are seen as well: io_uring IORING_OP_READ/READV (QEMU
 * aio=io_uring), Linux AIO, and other users of the page cache with a user
 * buffer. It needs kprobes (CONFIG_KPROBES, CONFIG_KPROBE_EVENTS) and the
 * kernel's own headers (struct iov_iter); written against Linux 6.12.
 *
 * Probes (kprobe at entry, kretprobe at return; the loader attaches only
 * the functions the kernel can trace, WITH_<FUNCTION> selects them here):
 *
 *   vfs_read(file, buf, count, pos)          read(2), pread64(2)          id 7
 *   vfs_readv(file, vec, vlen, pos, flags)   readv, preadv, preadv2       id 8
 *   aio_read(kiocb, iocb, vectored, compat)  io_submit PREAD/PREADV       id 9
 *   filemap_read(iocb, iter, already_read)   any other page-cache read:   id 10
 *                                            io_uring READ/READV, ...
 *
 * One layer per read, so a read is never emitted twice: the first three are
 * "outer" probes and remember the destination per thread in `pending`;
 * filemap_read (the page-cache copy under the read_iter of ext4, xfs,
 * btrfs, fuse, ramfs, netfs with a cache, block devices) emits only when
 * no outer read of the same thread is in flight. So read() of an ext4 file
 * is reported by vfs_read, never again by the filemap_read beneath it, and
 * filemap_read reports what reaches the page cache any other way: io_uring
 * (whose read path has no traceable function of its own in 6.12: the one
 * that calls ->read_iter, io_iter_do_read, is `static inline`, so notrace),
 * and AIO where aio_read is not probed. Outer probes do not nest in 6.12
 * (no vfs_read under aio_read or vfs_readv, nor under itself).
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
 * address and are counted, not emitted.
 *
 * Same rules as read_trace.c: only tgids in `targets` (io_uring's io-wq
 * workers share their process's tgid), nothing shorter than MIN_BYTES, a
 * ring buffer without wakeups. Cost: unlike a syscall tracepoint, a
 * kretprobe takes a return-hook instance for every call on the machine,
 * target or not, before this program filters; the loader raises kretprobe
 * maxactive so threads sleeping in read() elsewhere do not exhaust them (a
 * missed return loses that read and leaves a stale `pending` entry until
 * the thread's next outer read).
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

BPF_HASH(pending, u64, struct pending_read, 16384); /* outer reads in flight, per thread */
BPF_HASH(inner, u64, struct pending_read, 16384);   /* filemap_read with no outer read */

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
	long ret = PT_REGS_RC(ctx);
	u64 n;
	if (r.probe == PROBE_AIO_READ) {
		if (ret != 0)
			return 0;
		n = r.want;
	} else {
		if (ret <= 0)
			return 0;
		n = (u64)ret;
	}
	emit_dst(id >> 32, &r, n, kinds);
	return 0;
}


#ifdef WITH_VFS_READ
int vfs_read_enter(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!is_target(tgid))
		return 0;
	u64 len = PT_REGS_PARM3(ctx);
	if (len < MIN_BYTES)
		return 0;
	struct pending_read p = {};
	p.dst = PT_REGS_PARM2(ctx);
	p.probe = PROBE_VFS_READ;
	p.kind = DST_BUF;
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
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!is_target(tgid))
		return 0;
	struct pending_read p = {};
	p.dst = PT_REGS_PARM2(ctx);
	p.nsegs = (u32)PT_REGS_PARM3(ctx);
	if (p.nsegs == 0)
		return 0;
	p.probe = PROBE_VFS_READV;
	p.kind = DST_UIOV;
	remember(&p);
	return 0;
}
int vfs_readv_exit(struct pt_regs *ctx)
{
	return outer_exit(ctx, KIND_UIOV);
}
#endif

#ifdef WITH_AIO_READ
/* fs/aio.c: iocb is the kernel's copy of the user's struct iocb */
int aio_read_enter(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!is_target(tgid))
		return 0;
	struct iocb cb = {};
	if (bpf_probe_read_kernel(&cb, sizeof(cb), (void *)PT_REGS_PARM2(ctx)))
		return 0;
	struct pending_read p = {};
	p.dst = cb.aio_buf;
	p.probe = PROBE_AIO_READ;
	if ((u8)PT_REGS_PARM3(ctx)) {
		p.kind = DST_UIOV;
		p.nsegs = (u32)cb.aio_nbytes;
		p.all = 1;
		if (p.nsegs == 0)
			return 0;
	} else {
		p.kind = DST_BUF;
		p.want = cb.aio_nbytes;
		if (p.want < MIN_BYTES)
			return 0;
	}
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
	struct pending_read p = {};
	if (from_iter(&p, (const struct iov_iter *)PT_REGS_PARM2(ctx)))
		return 0;
	p.probe = PROBE_FILEMAP_READ;
	p.skip = PT_REGS_PARM3(ctx);
	inner.update(&id, &p);
	return 0;
}
int filemap_read_exit(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct pending_read *p = inner.lookup(&id);
	if (!p)
		return 0;
	struct pending_read r = *p;
	inner.delete(&id);
	long ret = PT_REGS_RC(ctx);
	if (ret <= 0 || (u64)ret <= r.skip)
		return 0;
	emit_dst(id >> 32, &r, (u64)ret - r.skip, KIND_BUF | KIND_KIOV);
	return 0;
}
#endif
