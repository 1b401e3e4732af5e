// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)

// The sendfile call logic that sfwatch.c (one group, run and attach) and
// daemon.c (many groups, the daemon) share: entry remembers a call's
// arguments per thread, exit pairs them with the return value and counts
// the call, signal_deliver settles a call a signal interrupted.
//
// Where the counts go is the includer's: it defines the four hooks declared
// below (add_counter, add_errno, add_latency, emit_call). group is what the
// entry program handed enter_call (sfwatch.c: 0; daemon.c: the group's
// counter row), kept with the call so that its exit counts it there.

#ifndef SFWATCH_CALL_H
#define SFWATCH_CALL_H

// Context of syscalls/sys_enter_sendfile64, written from
// /sys/kernel/tracing/events/syscalls/sys_enter_sendfile64/format.
struct sys_enter_sendfile64_ctx {
	__u64 common;    // common_type, flags, preempt_count, pid
	__s32 syscall_nr; // offset 8
	__u32 pad;
	__u64 out_fd;    // offset 16, an int widened to 8 bytes
	__u64 in_fd;     // offset 24
	__u64 offset;    // offset 32, loff_t __user *
	__u64 count;     // offset 40
};

// Context of syscalls/sys_exit_sendfile64, from
// /sys/kernel/tracing/events/syscalls/sys_exit_sendfile64/format.
struct sys_exit_sendfile64_ctx {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__s64 ret; // offset 16
};

// The head of the kernel's struct k_sigaction, whose first member is its
// struct sigaction (include/linux/signal_types.h): sa_handler then sa_flags
// on every 64-bit architecture but MIPS, unchanged since Linux 2.x. Read by
// offset rather than relocated with CO-RE: a CO-RE relocation makes the
// loader parse the whole kernel BTF on every run. signal_deliver is a raw
// tracepoint (see the loader), so its arguments are the kernel's own:
// trace_signal_deliver(int sig, struct kernel_siginfo *info,
// struct k_sigaction *ka).
struct k_sigaction_head {
	__u64 sa_handler;
	__u64 sa_flags;
};

// include/linux/errno.h: what a syscall returns when a signal arrives
// before it has done anything. Never seen by the program: the kernel
// restarts the call or turns the code into EINTR as it delivers the signal.
#define ERESTARTSYS 512           // restart if the handler has SA_RESTART
#define ERESTARTNOINTR 513        // always restart
#define ERESTARTNOHAND 514        // restart only if no handler runs
#define ERESTART_RESTARTBLOCK 516 // as NOHAND, through restart_syscall
#define EINTR 4
#define SA_RESTART 0x10000000 // x86-64 and asm-generic uapi signal.h
#define SIG_DFL 0
#define SIG_IGN 1

enum event_flag {
	EVENT_OFFSET_BEFORE_OK = 1, // offset_before was read from user memory
	EVENT_OFFSET_AFTER_OK = 2,  // offset_after was read from user memory
};

// One sendfile call, shared with Go through bpf2go -type event.
struct event {
	__u64 start_ns;    // CLOCK_MONOTONIC at syscall entry
	__u64 duration_ns; // entry to exit
	__u64 offset_ptr;  // the loff_t * argument; 0 for NULL
	__s64 offset_before;
	__s64 offset_after;
	__u64 count;
	__s64 ret;
	__u32 pid; // thread group id, what userspace calls the pid
	__u32 tid;
	__s32 out_fd;
	__s32 in_fd;
	__u32 flags; // enum event_flag
	__u32 reserved;
	__u8 comm[16];
};

// Indexes into the counters map, shared with Go through bpf2go -type counter.
enum counter {
	COUNTER_CALLS,       // completed calls (paired enter/exit)
	COUNTER_BYTES,       // sum of positive return values
	COUNTER_ERRORS,      // ret < 0
	COUNTER_SHORT,       // 0 < ret < count
	COUNTER_EOF,         // ret == 0, count > 0
	COUNTER_OFFSET_NULL, // offset argument was NULL
	COUNTER_OFFSET_PTR,  // offset argument was a pointer
	COUNTER_LOST,        // ring buffer full: event dropped, counts kept
	COUNTER_SAMPLED_OUT, // not emitted because of sample_every
	COUNTER_UNPAIRED,    // exit without a remembered entry (began before attach, or evicted)
	COUNTER_DURATION_NS, // sum of call durations, the histogram's sum
	COUNTER_SAMPLE_TICK, // per-CPU position in the sampling cycle, not a total
	COUNTER_RESTARTS,    // interrupted by a signal and restarted by the kernel: not calls
	COUNTER_ESCAPED,     // tasks of the run moved out of its group (followed since)
	COUNTER_EMPTY,       // ret == 0, count == 0: asked for nothing (last: the others keep their values)
	COUNTER_MAX,
};

#define MAX_ERRNO 4096
#define LATENCY_BUCKETS 64

enum inflight_state {
	INFLIGHT_IDLE,
	INFLIGHT_ACTIVE,      // between entry and exit
	INFLIGHT_INTERRUPTED, // exited with ERESTART*: restart or EINTR not yet known
	INFLIGHT_RESTARTING,  // a handler with SA_RESTART decided: the next entry is the restart
};

// Arguments of a call between entry and exit, per thread.
struct inflight {
	__u64 start_ns;
	__u64 offset_ptr;
	__s64 offset_before;
	__u64 count;
	__s32 out_fd;
	__s32 in_fd;
	__u32 flags;
	__u32 state;          // enum inflight_state
	__u64 duration_ns;    // INFLIGHT_INTERRUPTED: entry to the interrupted exit
	__s64 restart_code;   // INFLIGHT_INTERRUPTED: the -ERESTART* it returned
	__u32 group;          // where the call is counted (see the top of this file)
	__u32 pad;
};

// Per-thread calls in flight: task-local storage, reached from the task
// itself with no hashing and no lock (an LRU hash takes bucket and LRU-list
// locks on every update, lookup and delete). A thread is in at
// most one sendfile at a time; its slot is created at its first call and
// freed with the thread, so a thread that dies inside the call leaves
// nothing behind, and memory grows only with the threads that call.
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC); // required for task storage
	__type(key, int);
	__type(value, struct inflight);
} inflight SEC(".maps");

// The includer's hooks.
static __always_inline void add_counter(__u32 group, __u32 idx, __u64 n); // counter idx (enum counter) += n
static __always_inline void add_errno(__u32 group, __u32 errno);          // a call failed with errno (1..4095)
static __always_inline void add_latency(__u32 group, __u32 bucket);       // a call took log2 bucket's time
static __always_inline int emit_call(struct inflight *call, __s64 ret, __u64 duration); // its event, or none

static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 b = 0;
	// Unrolled binary search: the verifier sees no loop.
	if (v >> 32) { v >>= 32; b += 32; }
	if (v >> 16) { v >>= 16; b += 16; }
	if (v >> 8) { v >>= 8; b += 8; }
	if (v >> 4) { v >>= 4; b += 4; }
	if (v >> 2) { v >>= 2; b += 2; }
	if (v >> 1) { v >>= 1; b += 1; }
	return b + (__u32)v; // 0 -> 0, 1 -> 1, 2..3 -> 2, ...
}

// sampled_out tells whether sample_every leaves this call's event out,
// advancing the cycle position at tick (per CPU, NULL: never out). Not
// atomic: a preempted program may repeat a position in the cycle, which
// moves the sample, not the totals.
static __always_inline int sampled_out(__u64 *tick, __u32 every)
{
	if (!tick)
		return 0;
	__u64 n = (*tick)++;
	return n % every != 0;
}

// wakeup_flag decides, before an event of size bytes is reserved in rb, whether its
// commit wakes the reader. Below wakeup_bytes of unread data the reader is
// not woken and drains on its own timer instead, which saves a wakeup per
// event on a busy server. Past it, wake once per eighth of the threshold
// produced, not on every event: each forced wakeup is an irq_work (a
// self-IPI) on this CPU, and the reader, woken once, drains everything
// there is. last_pos is the producer position of the last forced wakeup,
// shared by every CPU; racy on purpose: a lost update costs one wakeup
// more, never one less.
static __always_inline __u64 wakeup_flag(void *rb, __u64 size, __u64 wakeup_bytes, __u64 *last_pos)
{
	if (bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA) + size >= wakeup_bytes) {
		__u64 prod = bpf_ringbuf_query(rb, BPF_RB_PROD_POS);
		if (prod - *last_pos >= wakeup_bytes / 8) {
			*last_pos = prod;
			return BPF_RB_FORCE_WAKEUP;
		}
	}
	return BPF_RB_NO_WAKEUP;
}

// fill_event writes a counted call's event; id is the calling thread's
// bpf_get_current_pid_tgid().
static __always_inline void fill_event(struct event *e, struct inflight *call, __s64 ret, __u64 duration,
				       __u64 id)
{
	e->start_ns = call->start_ns;
	e->duration_ns = duration;
	e->offset_ptr = call->offset_ptr;
	e->offset_before = call->offset_before;
	e->offset_after = 0;
	e->count = call->count;
	e->ret = ret;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->out_fd = call->out_fd;
	e->in_fd = call->in_fd;
	e->flags = call->flags;
	e->reserved = 0;
	if (call->offset_ptr &&
	    bpf_probe_read_user(&e->offset_after, sizeof(e->offset_after),
				(void *)call->offset_ptr) == 0)
		e->flags |= EVENT_OFFSET_AFTER_OK;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

// enter_call remembers a call's arguments, as the syscall received them, for
// its exit, to be counted in group. Shared by the entry programs, which call
// it for watched tasks only.
static __always_inline int enter_call(__u64 out_fd, __u64 in_fd, __u64 offset_ptr, __u64 count,
				      __u32 group)
{
	struct inflight *in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
						   BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in)
		return 0; // out of memory: the exit counts the call as unpaired
	// The last call was interrupted and no handler turned it into EINTR
	// (see signal_deliver): this entry is the kernel restarting it.
	if (in->state == INFLIGHT_INTERRUPTED || in->state == INFLIGHT_RESTARTING)
		add_counter(in->group, COUNTER_RESTARTS, 1);

	in->start_ns = bpf_ktime_get_ns();
	in->offset_ptr = offset_ptr;
	in->offset_before = 0;
	in->count = count;
	in->out_fd = (__s32)out_fd;
	in->in_fd = (__s32)in_fd;
	in->flags = 0;
	in->group = group;
	if (offset_ptr &&
	    bpf_probe_read_user(&in->offset_before, sizeof(in->offset_before),
				(void *)offset_ptr) == 0)
		in->flags = EVENT_OFFSET_BEFORE_OK;
	in->state = INFLIGHT_ACTIVE;
	return 0;
}

// finish_call counts a call that returned ret to the program and emits its
// event. It runs in the calling thread: at the exit, or for EINTR while the
// signal is delivered.
static __always_inline int finish_call(struct inflight *call, __s64 ret, __u64 duration)
{
	__u32 g = call->group;

	add_counter(g, COUNTER_CALLS, 1);
	add_counter(g, call->offset_ptr ? COUNTER_OFFSET_PTR : COUNTER_OFFSET_NULL, 1);
	if (ret > 0) {
		add_counter(g, COUNTER_BYTES, ret);
		if ((__u64)ret < call->count)
			add_counter(g, COUNTER_SHORT, 1);
	} else if (ret == 0) {
		add_counter(g, call->count ? COUNTER_EOF : COUNTER_EMPTY, 1);
	} else {
		add_counter(g, COUNTER_ERRORS, 1);
		add_errno(g, (__u32)(-ret));
	}
	add_counter(g, COUNTER_DURATION_NS, duration);
	add_latency(g, log2_bucket(duration));
	return emit_call(call, ret, duration);
}

// exit_call pairs a call's return value with its entry, counts it and emits
// it. Shared by the exit programs, which call it for watched tasks only;
// unpaired exits are counted in group.
static __always_inline int exit_call(__s64 ret, __u32 group)
{
	__u64 now = bpf_ktime_get_ns();
	// No create here: a thread whose entry was not seen has no slot, or
	// an inactive one.
	struct inflight *in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	if (!in || in->state != INFLIGHT_ACTIVE) {
		add_counter(group, COUNTER_UNPAIRED, 1);
		return 0;
	}
	// Only this thread writes its slot, so it is read in place.
	__u64 duration = now - in->start_ns;
	// A signal came before any byte moved. The program never sees these
	// codes: the kernel restarts the same sendfile (the next entry counts
	// a restart) or returns EINTR (signal_deliver counts the call). Counting
	// the interruption as a failed call would make every Go server
	// preempted mid-call (SIGURG, SA_RESTART) look like it had errors.
	if (ret <= -ERESTARTSYS && ret >= -ERESTART_RESTARTBLOCK) {
		in->state = INFLIGHT_INTERRUPTED;
		in->duration_ns = duration;
		in->restart_code = ret;
		return 0;
	}
	in->state = INFLIGHT_IDLE;
	return finish_call(in, ret, duration);
}

// A kprobe and a kretprobe on the syscall's x86-64 entry point: from Linux
// 7.2 the syscall tracepoints run BPF preemptibly, and a thread preempted
// inside a program makes the kernel skip that program for every other
// thread on the CPU (docs/kernels.md has how often). Kprobes run BPF
// with preemption disabled: never skipped in the measurements
// (docs/kernels.md, scripts/kernels/recexp). Their limit: the kretprobe
// holds at most maxactive calls in flight; exits beyond it are missed, and
// the loader counts them as this program's skips.
//
// __x64_sys_sendfile64(const struct pt_regs *regs): the syscall's
// arguments are in the user registers regs points at, read at the x86-64
// struct pt_regs offsets (arch/x86/include/asm/ptrace.h, unchanged since
// 4.17 brought the wrappers). The kretprobe's registers are the kernel's
// at the wrapper's return: ax holds what the syscall returns.
struct x86_pt_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax;
};

// kprobe_enter is enter_call from the kprobe's registers.
static __always_inline int kprobe_enter(struct x86_pt_regs *ctx, __u32 group)
{
	struct x86_pt_regs user;
	if (bpf_probe_read_kernel(&user, sizeof(user), (void *)ctx->di))
		return 0; // cannot happen: regs is on the task's kernel stack
	// sendfile64(int out_fd, int in_fd, loff_t *offset, size_t count):
	// di, si, dx, then r10 (the syscall ABI's fourth register).
	return enter_call(user.di, user.si, user.dx, user.r10, group);
}

// settle_signal runs in the thread that takes a signal, just before the
// kernel either runs its handler (and, for a syscall that returned
// ERESTART*, decides between restart and EINTR, arch handle_signal) or
// applies its default action. It settles an interrupted sendfile the way
// the kernel is about to.
//
// Several signals can be delivered on one return to user space (one burst,
// or a stop and what came while stopped). Only the first that runs a
// handler decides: it rewrites the syscall's return register (EINTR, or
// the syscall number again for a restart), and the handlers after it find
// no ERESTART* code left to act on. So the first decision is final, and a
// restart decided here is remembered as such until the next entry.
static __always_inline int settle_signal(struct bpf_raw_tracepoint_args *ctx)
{
	struct inflight *in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	if (!in || in->state != INFLIGHT_INTERRUPTED)
		return 0;
	struct k_sigaction_head ka;
	if (bpf_probe_read_kernel(&ka, sizeof(ka), (void *)ctx->args[2]))
		return 0; // cannot happen for a valid pointer; the call stays unsettled
	// Ignored, or a default action: no handler runs, so a stop and
	// continue restarts the call (counted at its next entry), and a fatal
	// one ends the thread with the call unanswered (not counted).
	if (ka.sa_handler == SIG_DFL || ka.sa_handler == SIG_IGN)
		return 0;
	__s64 code = in->restart_code;
	int eintr = code == -ERESTARTNOHAND || code == -ERESTART_RESTARTBLOCK ||
		    (code == -ERESTARTSYS && !(ka.sa_flags & SA_RESTART));
	if (!eintr) {
		// Restarted after the handler: the next entry counts it.
		in->state = INFLIGHT_RESTARTING;
		return 0;
	}
	in->state = INFLIGHT_IDLE;
	return finish_call(in, -EINTR, in->duration_ns);
}

#endif
