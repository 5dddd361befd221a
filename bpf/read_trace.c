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
 * and pipe chatter) are skipped. Events go through a ring buffer without
 * wakeups; user space drains it on its own clock, never per event.
 *
 * Defines set by the loader: MIN_BYTES, MAX_IOV, RINGBUF_PAGES, MAX_IOCBS,
 * MAX_AIO_IOV, ALL_TGIDS (trace every process), and WITH_<SYSCALL> for each
 * syscall to attach: every attached syscall costs every process on the
 * machine a tracepoint hit, so only the ones the targets use are attached.
 */
#include <uapi/linux/ptrace.h>
#include <linux/uio.h>
#include <uapi/linux/aio_abi.h>

/* probe ids: the hint-trace format stores these (pyksm/collect/tracefile.py) */
#define PROBE_READ 1
#define PROBE_PREAD64 2
#define PROBE_READV 3
#define PROBE_PREADV 4
#define PROBE_PREADV2 5
#define PROBE_IO_SUBMIT 6

struct read_event {
	u64 ts_ns;  /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	u32 tgid;
	u32 probe;
	u64 start;
	u64 len;
};

struct pending_read {
	u64 dst;    /* buffer, or iovec array */
	u32 probe;
	u32 iovcnt; /* 0: a plain buffer */
};

BPF_HASH(targets, u32, u32, 4096);          /* tgid -> trust group (0: none) */
BPF_HASH(pending, u64, struct pending_read, 16384);
BPF_ARRAY(stats, u64, 4);                   /* 0 emitted, 1 ringbuf full, 2 short, 3 iov cut */
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
	return targets.lookup(&tgid) != NULL;
#endif
}

static __always_inline void emit(u32 tgid, u32 probe, u64 start, u64 len)
{
	struct read_event *e = events.ringbuf_reserve(sizeof(*e));
	if (!e) {
		count(1);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->tgid = tgid;
	e->probe = probe;
	e->start = start;
	e->len = len;
	events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	count(0);
}

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
			count(2);
		return 0;
	}
	u32 tgid = id >> 32;
	if (r.iovcnt == 0) {
		emit(tgid, r.probe, r.dst, (u64)ret);
		return 0;
	}
	u64 left = (u64)ret;
	u32 n = r.iovcnt;
	/* A constant bound for the verifier, as well as the runtime count. */
	for (int i = 0; i < MAX_IOV; i++) {
		if (i >= n || left == 0)
			break;
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(r.dst + i * sizeof(iov))))
			break;
		u64 take = iov.iov_len < left ? iov.iov_len : left;
		if (take)
			emit(tgid, r.probe, (u64)iov.iov_base, take);
		left -= take;
	}
	if (left)
		count(3);
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
