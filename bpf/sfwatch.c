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

#include "call.h"

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

// The hooks of call.h: sfwatch counts every call in its one set of totals.
static __always_inline void add_counter(__u32 group, __u32 idx, __u64 n)
{
	add(idx, n);
}

static __always_inline void add_errno(__u32 group, __u32 errno)
{
	if (errno >= MAX_ERRNO)
		return;
	__u64 *n = bpf_map_lookup_elem(&errno_counts, &errno);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void add_latency(__u32 group, __u32 bucket)
{
	__u64 *hist = slot(&latency_log2, LATENCY_BUCKETS, bucket);
	if (hist)
		__sync_fetch_and_add(hist, 1);
}

// emit_call sends a counted call's event, one in sample_every.
static __always_inline int emit_call(struct inflight *call, __s64 ret, __u64 duration)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (sample_every > 1 && sampled_out(slot(&counters, COUNTER_ROW, COUNTER_SAMPLE_TICK), sample_every)) {
		add(COUNTER_SAMPLED_OUT, 1);
		return 0;
	}
	__u64 wakeup = wakeup_flag(&events, sizeof(struct event), wakeup_bytes, &last_wakeup_pos);
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		add(COUNTER_LOST, 1);
		return 0;
	}
	fill_event(e, call, ret, duration, id);
	bpf_ringbuf_submit(e, wakeup);
	return 0;
}

// The entry and exit are attached one of two ways (the loader chooses).
// Each program tests the cgroup first, so that calls of every other process
// cost one helper call and no map work.
//
// The syscall tracepoints: what sfwatch uses wherever the kernel runs their
// BPF programs with preemption disabled (before Linux 7.2), and on every
// architecture. The kprobe pair: Linux 7.2+ on x86-64 (see call.h).
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int sys_enter_sendfile64(struct sys_enter_sendfile64_ctx *ctx)
{
	if (!watched())
		return 0;
	return enter_call(ctx->out_fd, ctx->in_fd, ctx->offset, ctx->count, 0);
}

SEC("tracepoint/syscalls/sys_exit_sendfile64")
int sys_exit_sendfile64(struct sys_exit_sendfile64_ctx *ctx)
{
	if (!watched())
		return 0;
	return exit_call(ctx->ret, 0);
}

SEC("kprobe/__x64_sys_sendfile64")
int sys_enter_sendfile64_kprobe(struct x86_pt_regs *ctx)
{
	if (!watched())
		return 0;
	return kprobe_enter(ctx, 0);
}

SEC("kretprobe/__x64_sys_sendfile64")
int sys_exit_sendfile64_kretprobe(struct x86_pt_regs *ctx)
{
	if (!watched())
		return 0;
	return exit_call((__s64)ctx->ax, 0);
}

// signal_deliver settles a call a signal interrupted (settle_signal).
SEC("raw_tp/signal_deliver")
int signal_deliver(struct bpf_raw_tracepoint_args *ctx)
{
	if (!watched())
		return 0;
	return settle_signal(ctx);
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
