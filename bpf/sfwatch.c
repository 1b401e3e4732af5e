// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

// sfwatch's kernel side: one event per sendfile(2) call made inside one
// cgroup v2 subtree, plus exact totals that do not depend on the event stream.
//
// At a sendfile64's entry the arguments (and *offset) are remembered per
// thread; its exit pairs them with the return value, counts, and emits.
// Entry and exit are the syscall tracepoints, or on Linux 7.2+ a kprobe
// pair (see the programs).
// A call that a signal interrupts is settled by signal_deliver, which sees
// whether the kernel restarts it or returns EINTR to the program.

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

struct task_struct; // only handed from one helper to another

#define TARGET_PATH_MAX 256 // longest group path whose escapes are told apart exactly

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// Set from Go before load (spec.Variables[...].Set); the verifier then
// prunes what they switch off.
volatile const __u64 target_cgroup_id = 0; // cgroup v2 id (inode) of the watched group
volatile const __u32 target_level = 0;     // its depth below the cgroup2 root
volatile const __u32 sample_every = 1;     // emit one event per N calls; totals stay exact
volatile const __u64 wakeup_bytes = 0;     // wake the reader only past this much unread data

// Following processes that leave the group (run): the group's path as the
// kernel prints it (from the cgroup2 root, no trailing slash; "" for the
// root), and where the running kernel keeps pid, tgid, group_leader and
// start_boottime in struct task_struct, read from its BTF at load time: the
// follow programs are raw tracepoints (closing a perf tracepoint event
// waits for an RCU grace period, one close after another), and theirs are
// the kernel's own arguments, task pointers.
volatile const char target_path[TARGET_PATH_MAX] = {};
volatile const __u32 target_path_len = 0;
volatile const __u32 task_pid_off = 0;
volatile const __u32 task_tgid_off = 0;
volatile const __u32 task_group_leader_off = 0;
volatile const __u32 task_start_off = 0; // start_boottime, ns

// Set once a task of the run has left the group: from then on a call from
// outside the group looks its task up in members. Only ever goes 0 -> 1.
__u32 any_followed = 0;

// Producer position of the last forced wakeup, shared by every CPU. Racy on
// purpose: a lost update costs one wakeup more, never one less.
__u64 last_wakeup_pos = 0;

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
	COUNTER_EOF,         // ret == 0
	COUNTER_OFFSET_NULL, // offset argument was NULL
	COUNTER_OFFSET_PTR,  // offset argument was a pointer
	COUNTER_LOST,        // ring buffer full: event dropped, counts kept
	COUNTER_SAMPLED_OUT, // not emitted because of sample_every
	COUNTER_UNPAIRED,    // exit without a remembered entry (began before attach, or evicted)
	COUNTER_DURATION_NS, // sum of call durations, the histogram's sum
	COUNTER_SAMPLE_TICK, // per-CPU position in the sampling cycle, not a total
	COUNTER_RESTARTS,    // interrupted by a signal and restarted by the kernel: not calls
	COUNTER_ESCAPED,     // tasks of the run moved out of its group (followed since)
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

// The event stream. A ring buffer keeps events in call order across CPUs and
// lets us reserve without copying; its size is set from Go (--ringbuf-size).
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

// Exact totals: a row of COUNTER_ROW slots per CPU (the loader multiplies
// max_entries by the possible CPUs), slot = enum counter, added to
// atomically. Own rows keep CPUs off each other's cache lines; atomic adds
// because a program can be preempted (Linux 7.2+) between reading a slot
// and writing it back, while another program adds to the same slot on the
// same CPU. A plain array that Go reads through memory: reading through
// the bpf syscall holds the CPU's BPF-active flag, and a kprobe that fires
// on the CPU of a reader preempted there is skipped.
#define COUNTER_ROW 16 // COUNTER_MAX rounded up to whole 64-byte lines
_Static_assert(COUNTER_MAX <= COUNTER_ROW, "a CPU's counters must fit its row");
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, COUNTER_ROW);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Failed calls by errno (index = -ret, 1..4095: every value the kernel can
// return as an error). A shared array, added to atomically (errors are the
// rare path), that Go reads through memory: reading 4,096 per-CPU slots
// through the bpf syscall holds the CPU's BPF-active flag 4,096 times, and
// a kprobe that fires on the CPU of a reader preempted in one is skipped.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_ERRNO);
	__type(key, __u32);
	__type(value, __u64);
} errno_counts SEC(".maps");

// Call duration histogram: bucket i counts durations in [2^(i-1), 2^i) ns,
// bucket 0 counts 0 ns. 64 buckets cover every u64. A row per CPU, read
// through memory, added to atomically: the same reasons as counters.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, LATENCY_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} latency_log2 SEC(".maps");

enum member_flag {
	MEMBER_FOLLOWED = 1, // moved out of the group: its calls are still the run's
};

// A task of the run. A thread id alone is not a task: the kernel may skip
// sched_process_exit (Linux 7.2+ can preempt a tracing program, and skips
// it on that CPU meanwhile), leaving an entry behind, and the id goes to an
// unrelated task later. The start time tells the two apart, here and in
// user space (/proc/PID/stat's starttime is start_boottime in ticks), so a
// missed exit costs one stale entry, never a wrong count or a wrong kill.
struct member {
	__u32 flags;          // enum member_flag
	__u32 pad;
	__u64 start_boottime; // the task's, ns since boot
};

// The run's tasks by thread id: every task forked by one of them, and the
// command itself (seen at its exec, inside the group). Looked up only when
// a task moves to another group (cgroup_attach_task), and for calls from
// outside the group once some task left. A hash: thread ids are sparse;
// deleted at each thread's exit. Sized for the threads a run has alive at
// once; a fork beyond it is not tracked, so its task could leave unseen.
// No preallocation: most runs have a handful of tasks.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct member);
} members SEC(".maps");

// Keep the enums and the event in BTF so bpf2go can generate Go types.
const struct event *unused_event __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum event_flag *unused_event_flag __attribute__((unused));
const enum member_flag *unused_member_flag __attribute__((unused));
const struct member *unused_member __attribute__((unused));

static __always_inline int in_target_cgroup(void)
{
	return bpf_get_current_ancestor_cgroup_id(target_level) == target_cgroup_id;
}

static __always_inline __u32 task_u32(__u64 task, __u32 off)
{
	__u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)(task + off));
	return v;
}

static __always_inline __u64 task_u64(__u64 task, __u32 off)
{
	__u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)(task + off));
	return v;
}

// member_of: the run's entry for task, whose thread id is tid, or NULL.
static __always_inline struct member *member_of(__u32 tid, __u64 task)
{
	struct member *m = bpf_map_lookup_elem(&members, &tid);
	if (m && m->start_boottime != task_u64(task, task_start_off))
		return NULL; // an exited task's: the id is another task's now
	return m;
}

static __always_inline int followed(__u32 tid, __u64 task)
{
	struct member *m = member_of(tid, task);
	return m && (m->flags & MEMBER_FOLLOWED);
}

// current_followed: the current task is one of the run's that left the
// group (by process, or one thread of a threaded group).
static __always_inline int current_followed(void)
{
	if (!any_followed)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 task = bpf_get_current_task();
	return followed(id >> 32, task_u64(task, task_group_leader_off)) || followed((__u32)id, task);
}

// watched: the current task is the run's: inside the group, or followed.
static __always_inline int watched(void)
{
	return in_target_cgroup() || current_followed();
}

// slot returns this CPU's slot idx of a map laid out in rows of row slots
// per CPU, or NULL past the map's end.
static __always_inline __u64 *slot(void *map, __u32 row, __u32 idx)
{
	__u32 key = bpf_get_smp_processor_id() * row + idx;
	return bpf_map_lookup_elem(map, &key);
}

static __always_inline void add(__u32 idx, __u64 n)
{
	__u64 *v = slot(&counters, COUNTER_ROW, idx);
	if (v)
		__sync_fetch_and_add(v, n);
}

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

// enter_call remembers a call's arguments, as the syscall received them, for
// its exit. Shared by the entry programs below, which call it for watched
// tasks only.
static __always_inline int enter_call(__u64 out_fd, __u64 in_fd, __u64 offset_ptr, __u64 count)
{
	struct inflight *in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
						   BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in)
		return 0; // out of memory: the exit counts the call as unpaired
	// The last call was interrupted and no handler turned it into EINTR
	// (see signal_deliver): this entry is the kernel restarting it.
	if (in->state == INFLIGHT_INTERRUPTED || in->state == INFLIGHT_RESTARTING)
		add(COUNTER_RESTARTS, 1);

	in->start_ns = bpf_ktime_get_ns();
	in->offset_ptr = offset_ptr;
	in->offset_before = 0;
	in->count = count;
	in->out_fd = (__s32)out_fd;
	in->in_fd = (__s32)in_fd;
	in->flags = 0;
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
	__u64 id = bpf_get_current_pid_tgid();

	add(COUNTER_CALLS, 1);
	add(call->offset_ptr ? COUNTER_OFFSET_PTR : COUNTER_OFFSET_NULL, 1);
	if (ret > 0) {
		add(COUNTER_BYTES, ret);
		if ((__u64)ret < call->count)
			add(COUNTER_SHORT, 1);
	} else if (ret == 0) {
		add(COUNTER_EOF, 1);
	} else {
		add(COUNTER_ERRORS, 1);
		__u32 errno = (__u32)(-ret);
		if (errno < MAX_ERRNO) {
			__u64 *n = bpf_map_lookup_elem(&errno_counts, &errno);
			if (n)
				__sync_fetch_and_add(n, 1);
		}
	}
	add(COUNTER_DURATION_NS, duration);
	__u64 *hist = slot(&latency_log2, LATENCY_BUCKETS, log2_bucket(duration));
	if (hist)
		__sync_fetch_and_add(hist, 1);

	if (sample_every > 1) {
		// Not atomic: a preempted program may repeat a position in the
		// cycle, which moves the sample, not the totals.
		__u64 *t = slot(&counters, COUNTER_ROW, COUNTER_SAMPLE_TICK);
		if (t) {
			__u64 n = (*t)++;
			if (n % sample_every != 0) {
				add(COUNTER_SAMPLED_OUT, 1);
				return 0;
			}
		}
	}

	// Decide the wakeup before the record is committed: below the threshold
	// the reader is not woken and drains on its own timer instead, which
	// saves a wakeup per event on a busy server. Past it, wake once per
	// eighth of the threshold produced, not on every event: each forced
	// wakeup is an irq_work (a self-IPI) on this CPU, and the reader, woken
	// once, drains everything there is.
	__u64 wakeup = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + sizeof(struct event) >= wakeup_bytes) {
		__u64 prod = bpf_ringbuf_query(&events, BPF_RB_PROD_POS);
		if (prod - last_wakeup_pos >= wakeup_bytes / 8) {
			last_wakeup_pos = prod;
			wakeup = BPF_RB_FORCE_WAKEUP;
		}
	}

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		add(COUNTER_LOST, 1);
		return 0;
	}
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
	bpf_ringbuf_submit(e, wakeup);
	return 0;
}

// exit_call pairs a call's return value with its entry, counts it and emits
// it. Shared by the exit programs below, which call it for watched tasks
// only.
static __always_inline int exit_call(__s64 ret)
{
	__u64 now = bpf_ktime_get_ns();
	// No create here: a thread whose entry was not seen has no slot, or
	// an inactive one.
	struct inflight *in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	if (!in || in->state != INFLIGHT_ACTIVE) {
		add(COUNTER_UNPAIRED, 1);
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

// The entry and exit are attached one of two ways (the loader chooses).
// Each program tests the cgroup first, so that calls of every other process
// cost one helper call and no map work.
//
// The syscall tracepoints: what sfwatch uses wherever the kernel runs their
// BPF programs with preemption disabled (before Linux 7.2), and on every
// architecture.
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int sys_enter_sendfile64(struct sys_enter_sendfile64_ctx *ctx)
{
	if (!watched())
		return 0;
	return enter_call(ctx->out_fd, ctx->in_fd, ctx->offset, ctx->count);
}

SEC("tracepoint/syscalls/sys_exit_sendfile64")
int sys_exit_sendfile64(struct sys_exit_sendfile64_ctx *ctx)
{
	if (!watched())
		return 0;
	return exit_call(ctx->ret);
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
// 4.17 brought the wrappers).
struct x86_pt_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax;
};

SEC("kprobe/__x64_sys_sendfile64")
int sys_enter_sendfile64_kprobe(struct x86_pt_regs *ctx)
{
	if (!watched())
		return 0;
	struct x86_pt_regs user;
	if (bpf_probe_read_kernel(&user, sizeof(user), (void *)ctx->di))
		return 0; // cannot happen: regs is on the task's kernel stack
	// sendfile64(int out_fd, int in_fd, loff_t *offset, size_t count):
	// di, si, dx, then r10 (the syscall ABI's fourth register).
	return enter_call(user.di, user.si, user.dx, user.r10);
}

// The kretprobe's registers are the kernel's at the wrapper's return: ax
// holds what the syscall returns.
SEC("kretprobe/__x64_sys_sendfile64")
int sys_exit_sendfile64_kretprobe(struct x86_pt_regs *ctx)
{
	if (!watched())
		return 0;
	return exit_call((__s64)ctx->ax);
}

// signal_deliver runs in the thread that takes a signal, just before the
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
SEC("raw_tp/signal_deliver")
int signal_deliver(struct bpf_raw_tracepoint_args *ctx)
{
	if (!watched())
		return 0;
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

// The programs below follow the run's tasks: they are attached for run,
// which promises every descendant of the command, wherever it goes.

// A task of the run (inside the group, or followed outside it) forked:
// the child is the run's too, and followed if its parent is.
// trace_sched_process_fork(struct task_struct *parent, struct task_struct *child)
SEC("raw_tp/sched_process_fork")
int sched_process_fork(struct bpf_raw_tracepoint_args *ctx)
{
	int inside = in_target_cgroup();
	if (!inside && !current_followed())
		return 0;
	// Forked outside the group, the child is outside it too.
	__u64 task = ctx->args[1];
	struct member m = {
		.flags = inside ? 0 : MEMBER_FOLLOWED,
		.start_boottime = task_u64(task, task_start_off),
	};
	__u32 child = task_u32(task, task_pid_off);
	if (child)
		bpf_map_update_elem(&members, &child, &m, BPF_ANY);
	return 0;
}

// A task inside the group execs: the command itself, started directly in
// the group by a parent outside it, is a member from before its first
// instruction.
SEC("raw_tp/sched_process_exec")
int sched_process_exec(struct bpf_raw_tracepoint_args *ctx)
{
	if (!in_target_cgroup())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 task = bpf_get_current_task();
	if (member_of(tid, task))
		return 0; // forked by one of the run's tasks: already a member
	struct member m = {.start_boottime = task_u64(task, task_start_off)};
	bpf_map_update_elem(&members, &tid, &m, BPF_ANY);
	return 0;
}

// A thread of the run exits: forget it, which keeps the map to the tasks
// alive. A skipped run leaves a stale entry that member_of sees through.
SEC("raw_tp/sched_process_exit")
int sched_process_exit(struct bpf_raw_tracepoint_args *ctx)
{
	if (!watched())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&members, &tid);
	return 0;
}

// path_in_target tells whether a group path, as the kernel prints it, is
// the group or below it.
static __always_inline int path_in_target(__u64 kernel_path)
{
	char path[TARGET_PATH_MAX + 1] = {};
	if (bpf_probe_read_kernel_str(path, sizeof(path), (void *)kernel_path) < 0)
		return 0;
	__u32 n = target_path_len;
	if (n > TARGET_PATH_MAX)
		return 0;
	for (__u32 i = 0; i < TARGET_PATH_MAX; i++) {
		if (i >= n)
			break;
		if (path[i] != target_path[i])
			return 0;
	}
	char next = path[n];
	return next == 0 || next == '/';
}

// A task is moved to another group. For one of the run's, moved out of the
// group, this is an escape: counted once, and followed from now on. Moved
// back in (or within), it is simply inside again.
// trace_cgroup_attach_task(struct cgroup *dst_cgrp, const char *path,
// struct task_struct *task, bool threadgroup); for a whole process, task
// is its leader, whose id is the pid.
SEC("raw_tp/cgroup_attach_task")
int cgroup_attach_task(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 task = ctx->args[2];
	__u32 tid = task_u32(task, task_pid_off);
	struct member *m = member_of(tid, task);
	if (!m)
		return 0;
	int inside;
	int moved_self = task == bpf_get_current_task() ||
			 (ctx->args[3] && task_u32(task, task_tgid_off) == bpf_get_current_pid_tgid() >> 32);
	if (moved_self)
		// It moved itself (the usual escape; for a whole process, from
		// any of its threads): the cgroup2 group it is in now is what
		// the filter tests, exact. A move in a cgroup v1 hierarchy
		// leaves it inside.
		inside = in_target_cgroup();
	else
		// Moved by another process: tell by the destination's path.
		// The tracepoint fires for v1 hierarchies too, whose paths
		// may look like an escape (README: Limits).
		inside = path_in_target(ctx->args[1]);
	if (inside) {
		m->flags &= ~MEMBER_FOLLOWED;
		return 0;
	}
	if (!(m->flags & MEMBER_FOLLOWED)) {
		m->flags |= MEMBER_FOLLOWED;
		add(COUNTER_ESCAPED, 1);
	}
	any_followed = 1;
	return 0;
}
