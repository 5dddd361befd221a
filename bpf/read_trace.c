// SPDX-License-Identifier: GPL-2.0
/*
 * read_trace.c: where do a target's file reads land in its memory?
 *
 * Loaded by pyksm/probes/loader.py with bcc. Only syscall tracepoints are
 * used for the read family, so the same program runs on any kernel with
 * syscall tracepoints (no kprobes needed; see docs in host-tracing.md).
 *
 * Enter probes remember the destination (buffer or iovec array) per thread;
 * exit probes emit one event per destination range, covering only the bytes
 * really read (the syscall's return value). io_submit has no exit that says
 * how much arrived, so PREAD/PREADV iocbs are emitted at submission.
 *
 * Filtering happens here: only tgids in `targets` are traced (the
 * controller updates that map), and reads shorter than MIN_BYTES (eventfd
 * and pipe chatter) are skipped. Events go through a ring buffer; user
 * space drains it on its own clock while reads come, never per event, and
 * only the first event after a drain (the ring was empty) wakes it.
 *
 * Defines set by the loader: MIN_BYTES, MAX_IOV, RINGBUF_PAGES, MAX_IOCBS,
 * MAX_AIO_IOV, ALL_TGIDS (trace every process), and WITH_<SYSCALL> for each
 * syscall to attach: every attached syscall costs every process on the
 * machine a tracepoint hit, so only the ones the targets use are attached.
 *
 * The event, the probe ids, the targets/stats/events maps and emit() are in
 * read_common.h, shared with vfs_read_trace.c (the kprobe layer).
 */
#include "read_common.h"
#include <uapi/linux/aio_abi.h>

struct pending_read {
	u64 dst;    /* buffer, or iovec array */
	u32 probe;
	u32 iovcnt; /* 0: a plain buffer */
};

BPF_HASH(pending, u64, struct pending_read, 16384);

static __always_inline int on_enter(u64 dst, u64 count_or_iovcnt, u32 probe, int vec)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!is_target(tgid))
		return 0;
	if (!vec && count_or_iovcnt < MIN_BYTES)
		return 0;
	struct pending_read p = {};
	p.dst = dst;
	p.probe = probe;
	p.iovcnt = vec ? (u32)count_or_iovcnt : 0;
	if (vec && p.iovcnt == 0)
		return 0;
	pending.update(&id, &p);
	return 0;
}

static __always_inline int on_exit(long ret)
{
	u64 id = bpf_get_current_pid_tgid();
	struct pending_read *p = pending.lookup(&id);
	if (!p)
		return 0;
	struct pending_read r = *p;
	pending.delete(&id);
	if (ret < MIN_BYTES) {
		if (ret > 0)
			count(STAT_SHORT);
		return 0;
	}
	u32 tgid = id >> 32;
	if (r.iovcnt == 0) {
		emit(tgid, r.probe, r.dst, (u64)ret);
		return 0;
	}
	emit_iovecs(tgid, r.probe, r.dst, r.iovcnt, (u64)ret, 1);
	return 0;
}

#ifdef WITH_READ
TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
	return on_enter((u64)args->buf, args->count, PROBE_READ, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
	return on_exit(args->ret);
}
#endif
#ifdef WITH_PREAD64
TRACEPOINT_PROBE(syscalls, sys_enter_pread64)
{
	return on_enter((u64)args->buf, args->count, PROBE_PREAD64, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_pread64)
{
	return on_exit(args->ret);
}
#endif
#ifdef WITH_READV
TRACEPOINT_PROBE(syscalls, sys_enter_readv)
{
	return on_enter((u64)args->vec, args->vlen, PROBE_READV, 1);
}
TRACEPOINT_PROBE(syscalls, sys_exit_readv)
{
	return on_exit(args->ret);
}
#endif
#ifdef WITH_PREADV
TRACEPOINT_PROBE(syscalls, sys_enter_preadv)
{
	return on_enter((u64)args->vec, args->vlen, PROBE_PREADV, 1);
}
TRACEPOINT_PROBE(syscalls, sys_exit_preadv)
{
	return on_exit(args->ret);
}
#endif
#ifdef WITH_PREADV2
TRACEPOINT_PROBE(syscalls, sys_enter_preadv2)
{
	return on_enter((u64)args->vec, args->vlen, PROBE_PREADV2, 1);
}
TRACEPOINT_PROBE(syscalls, sys_exit_preadv2)
{
	return on_exit(args->ret);
}
#endif

#ifdef WITH_IO_SUBMIT
/* QEMU aio=native: PREAD/PREADV iocbs, emitted at submission (requested bytes). */
TRACEPOINT_PROBE(syscalls, sys_enter_io_submit)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!is_target(tgid))
		return 0;
	long nr = args->nr;
	for (int i = 0; i < MAX_IOCBS; i++) {
		if (i >= nr)
			break;
		u64 cbp = 0;
		if (bpf_probe_read_user(&cbp, sizeof(cbp), (void *)((u64)args->iocbpp + i * 8)))
			break;
		struct iocb cb = {};
		if (bpf_probe_read_user(&cb, sizeof(cb), (void *)cbp))
			break;
		if (cb.aio_lio_opcode == IOCB_CMD_PREAD) {
			if (cb.aio_nbytes >= MIN_BYTES)
				emit(tgid, PROBE_IO_SUBMIT, cb.aio_buf, cb.aio_nbytes);
		} else if (cb.aio_lio_opcode == IOCB_CMD_PREADV) {
			for (int j = 0; j < MAX_AIO_IOV; j++) {
				if (j >= cb.aio_nbytes)
					break;
				struct iovec iov = {};
				if (bpf_probe_read_user(&iov, sizeof(iov),
							(void *)(cb.aio_buf + j * sizeof(iov))))
					break;
				if (iov.iov_len >= MIN_BYTES)
					emit(tgid, PROBE_IO_SUBMIT, (u64)iov.iov_base, iov.iov_len);
			}
		}
	}
	return 0;
}
#endif
