// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

// The daemon's kernel side: exact sendfile(2) totals per cgroup v2 group,
// for every thread in any of the watched subtrees, including groups created
// after the programs were attached. The call logic is sfwatch.c's (call.h);
// what differs is the filter (many subtrees, in a map the daemon updates
// while attached) and where a call is counted (its group's row).
//
// A call of a watched thread is counted in the row of its group: the group
// the thread is in (its leaf), or its ancestor group_depth levels below the
// watched one. The first call of a group takes a free row; when none is
// left the call goes to row 0, "_other", and is counted as an overflow.
// The daemon gives a row back once its group is removed.

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#include "call.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// The most subtrees watched at once: a watch list is a handful of paths
// (one per slice, one per kubelet layout); the next issue's clients add one
// each.
#define MAX_WATCHES 64

// Paths longer than this are cut in a group_event (flag GROUP_PATH_CUT):
// TRACE_CGROUP_PATH_LEN, what the kernel's cgroup tracepoints print at most.
#define GROUP_PATH_MAX 1024

// A row of a group's totals, in 64-bit slots: the enum counter slots of
// call.h first (those that are per call), then the group's id, the log2
// latency buckets, the failed calls by errno and, for a client run's row,
// its sampling (not totals: a path's totals never add them up).
enum row_slot {
	ROW_ID = COUNTER_MAX,   // the group's cgroup id; 0 while the row is free
	ROW_LATENCY = 16,       // ROW_LATENCY_BUCKETS buckets: [2^(i-1), 2^i) ns, the last open-ended
	ROW_ERRNO = 52,         // ROW_ERRNOS slots, index errno; slot 0 counts errnos >= ROW_ERRNOS
	ROW_SAMPLE_EVERY = 188, // a client run's --sample N; 0: not a run (sample_every applies)
	ROW_SAMPLE_TICK = 189,  // the run's position in its sampling cycle, added to atomically
	ROW_SIZE = 192,         // 24 cache lines
};
#define ROW_LATENCY_BUCKETS 36 // up to 2^35 ns (34 s): Prometheus' buckets end at 2^34
#define ROW_ERRNOS 136         // every errno Linux defines is below 134 (EHWPOISON)
_Static_assert(ROW_ID < ROW_LATENCY, "counters overlap the latency buckets");
_Static_assert(ROW_LATENCY + ROW_LATENCY_BUCKETS <= ROW_ERRNO, "latency overlaps errnos");
_Static_assert(ROW_ERRNO + ROW_ERRNOS <= ROW_SAMPLE_EVERY, "errnos overlap the run's sampling");
_Static_assert(ROW_SAMPLE_TICK < ROW_SIZE, "the run's sampling overflows the row");

// The daemon's own counters, not a group's.
enum daemon_counter {
	DAEMON_UNPAIRED,     // exits without a remembered entry (began before attach)
	DAEMON_OVERFLOW,     // calls counted in row 0 because every row was taken
	DAEMON_ROW_RACE,     // a group's first calls on two CPUs at once: one row given back
	DAEMON_GROUPS_LOST,  // group events dropped: the ring buffer was full
	DAEMON_COUNTER_MAX,
};

enum group_event_kind {
	GROUP_MKDIR = 1,
	GROUP_RMDIR = 2,
};

enum group_event_flag {
	GROUP_PATH_CUT = 1, // the path was longer than GROUP_PATH_MAX
};

// A cgroup v2 group created or removed, anywhere on the machine, shared
// with Go through bpf2go -type group_event: it names a group's id before
// any call of it can be counted, so the daemon can name every row, and it
// tells the daemon the moment a group is gone.
struct group_event {
	__u64 id;
	__u32 kind;  // enum group_event_kind
	__u32 level;
	__u32 flags; // enum group_event_flag
	__u32 len;   // bytes of path, without the NUL
	char path[GROUP_PATH_MAX];
};

// A watch depth: every call in the subtree is counted in the watched
// group's own row (a client run's group, whose row the daemon claimed).
#define DEPTH_SUBTREE 0xffffffff

// What the daemon watches: a subtree, and at which depth below it groups
// are told apart (0: each thread's own group; DEPTH_SUBTREE: none are).
struct watch {
	__u64 id;    // the watched group's cgroup id
	__u32 level; // its depth below the cgroup2 root
	__u32 depth;
};

// The watched subtrees, sorted by level. Not a map: a call outside every
// watched subtree, the common case, then costs one ancestor lookup per
// distinct level and a compare per subtree, with no hashing. Two sets in
// global data, written by the daemon through memory: it fills the one the
// programs do not read, then switches watch_active to it, so no program
// sees a half-written list.
struct watch_set {
	__u32 count;
	__u32 pad;
	struct watch w[MAX_WATCHES];
};
struct watch_set watch_set_0 = {};
struct watch_set watch_set_1 = {};
__u32 watch_active = 0; // 0 or 1: the set the programs read

// Each counted group's row, by the group's cgroup id. A hash: ids are
// sparse. The loader sizes it to --max-groups: it never holds more entries
// than there are rows (the daemon deletes an entry before it frees the
// row). Preallocated, the default: inserting never allocates, on the rare
// path of a group's first call.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u32);
} group_rows SEC(".maps");

// The free rows, 1..--max-groups (the loader sizes it; the daemon fills it
// before attaching, and gives rows back as groups go). A queue: a group's
// first call takes any free row in one pop, and only that rare path takes
// the queue's lock.
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1024);
	__type(value, __u32);
} free_rows SEC(".maps");

// The totals: ROW_SIZE slots a row, row 0 "_other", then one row per
// group (the loader sizes it to --max-groups + 1 rows). Shared by the
// CPUs, added to atomically: a row per CPU per group would cost memory
// times the CPUs of a large machine. Mmapable, read through memory: no bpf
// syscall at scrape time, which on 7.2+ would make kprobes on the reader's
// CPU skip (see the counters of sfwatch.c).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ROW_SIZE);
	__type(key, __u32);
	__type(value, __u64);
} rows SEC(".maps");

// The daemon's counters (enum daemon_counter). Rare events, so one shared
// row, added to atomically, read through memory.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, DAEMON_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} daemon_counters SEC(".maps");

// Group events: a few a second on a busy node, 1 KiB each. 256 KiB holds
// 250 between two reads; a lost one is counted, and the daemon then names
// the group from the cgroup file system instead.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} group_events SEC(".maps");

// The calls' events, with --events: set from Go before the programs are
// loaded (the loader also sizes call_events to --ring-size then, and to a
// page without --events).
volatile const __u32 events_on = 0;
volatile const __u32 sample_every = 1; // emit one event per N calls; totals stay exact
volatile const __u64 wakeup_bytes = 0; // wake the reader only past this much unread data

// Producer position of the last forced wakeup (see wakeup_flag).
__u64 last_wakeup_pos = 0;

// A call's event (sfwatch.c's) and the id of the group it is counted in.
struct call_event {
	struct event call;
	__u64 group_id; // 0: counted in row 0, "_other"
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} call_events SEC(".maps");

// Each CPU's position in the sampling cycle of --sample.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sample_tick SEC(".maps");

// The ring buffer of each client run, by its row: the calls counted in a
// run's row go there, not to call_events, whether or not --events is on.
// The daemon creates each run's ring, of the size the run asks for, and
// hands it to the run's client, which maps it unprivileged. An array of
// maps: rows are dense, 0..--max-groups (the loader sizes it to
// --max-groups + 1), and a row without a run has no ring, so a call of an
// ordinary group costs one lookup more. The inner map is a template: the
// kernel checks a ring put here against its type and flags, not its size
// (bpf_map_meta_equal).
struct run_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1025);
	__type(key, __u32);
	__array(values, struct run_ring);
} run_rings SEC(".maps");

// Keep the types in BTF so bpf2go can generate Go types.
const struct group_event *unused_group_event __attribute__((unused));
const enum row_slot *unused_row_slot __attribute__((unused));
const enum daemon_counter *unused_daemon_counter __attribute__((unused));
const enum group_event_kind *unused_group_event_kind __attribute__((unused));
const struct watch *unused_watch __attribute__((unused));
const struct watch_set *unused_watch_set __attribute__((unused));

// NO_ROW is the group of an exit that has no row: its unpaired count goes
// to the daemon's counters.
#define NO_ROW 0xffffffff

static __always_inline void daemon_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&daemon_counters, &idx);
	if (v)
		__sync_fetch_and_add(v, n);
}

static __always_inline void row_add(__u32 row, __u32 slot, __u64 n)
{
	__u32 key = row * ROW_SIZE + slot;
	__u64 *v = bpf_map_lookup_elem(&rows, &key);
	if (v)
		__sync_fetch_and_add(v, n);
}

// The hooks of call.h: group is the call's row.
static __always_inline void add_counter(__u32 group, __u32 idx, __u64 n)
{
	if (group == NO_ROW) {
		if (idx == COUNTER_UNPAIRED)
			daemon_add(DAEMON_UNPAIRED, n);
		return;
	}
	row_add(group, idx, n);
}

static __always_inline void add_errno(__u32 group, __u32 errno)
{
	row_add(group, ROW_ERRNO + (errno < ROW_ERRNOS ? errno : 0), 1);
}

static __always_inline void add_latency(__u32 group, __u32 bucket)
{
	if (bucket >= ROW_LATENCY_BUCKETS)
		bucket = ROW_LATENCY_BUCKETS - 1;
	row_add(group, ROW_LATENCY + bucket, 1);
}

// emit_run sends a call counted in a client run's row g to the run's own
// ring, one in the run's ROW_SAMPLE_EVERY. A plain struct event: the
// client decodes it as sfwatch.c's. The tick is shared by the CPUs and
// added to atomically: a run's sample is one cycle, whatever CPU calls.
// Adaptive wakeup: the client waits on the ring itself.
static __always_inline int emit_run(void *ring, __u32 g, struct inflight *call, __s64 ret, __u64 duration)
{
	__u32 key = g * ROW_SIZE + ROW_SAMPLE_EVERY;
	__u64 *every = bpf_map_lookup_elem(&rows, &key);
	__u64 n = every ? *every : 0;
	if (n > 1) {
		key = g * ROW_SIZE + ROW_SAMPLE_TICK;
		__u64 *tick = bpf_map_lookup_elem(&rows, &key);
		if (tick && __sync_fetch_and_add(tick, 1) % n != 0) {
			add_counter(g, COUNTER_SAMPLED_OUT, 1);
			return 0;
		}
	}
	struct event *e = bpf_ringbuf_reserve(ring, sizeof(*e), 0);
	if (!e) {
		add_counter(g, COUNTER_LOST, 1);
		return 0;
	}
	fill_event(e, call, ret, duration, bpf_get_current_pid_tgid());
	bpf_ringbuf_submit(e, 0);
	return 0;
}

// emit_call sends a counted call's event: to its run's ring when its row
// is a client run's (emit_run), else with its group's id to call_events,
// one in sample_every, when the daemon was started with --events. Without
// it, events_on is 0 when the programs are verified: the verifier drops
// the call_events path (not the runs'), and a call of a group without a
// run costs one lookup more than before events existed.
static __always_inline int emit_call(struct inflight *call, __s64 ret, __u64 duration)
{
	__u32 g = call->group;
	if (g != 0 && g != NO_ROW) {
		void *ring = bpf_map_lookup_elem(&run_rings, &g);
		if (ring)
			return emit_run(ring, g, call, ret, duration);
	}
	if (!events_on)
		return 0;
	if (sample_every > 1) {
		__u32 zero = 0;
		if (sampled_out(bpf_map_lookup_elem(&sample_tick, &zero), sample_every)) {
			add_counter(g, COUNTER_SAMPLED_OUT, 1);
			return 0;
		}
	}
	__u64 wakeup = wakeup_flag(&call_events, sizeof(struct call_event), wakeup_bytes, &last_wakeup_pos);
	struct call_event *e = bpf_ringbuf_reserve(&call_events, sizeof(*e), 0);
	if (!e) {
		add_counter(g, COUNTER_LOST, 1);
		return 0;
	}
	fill_event(&e->call, call, ret, duration, bpf_get_current_pid_tgid());
	// The row's group: row_of named the row before the call was counted
	// in it. 0 for row 0, "_other".
	__u32 key = g * ROW_SIZE + ROW_ID;
	__u64 *id = g ? bpf_map_lookup_elem(&rows, &key) : NULL;
	e->group_id = id ? *id : 0;
	bpf_ringbuf_submit(e, wakeup);
	return 0;
}

// watch_of_current finds the watched subtree the current thread is in
// (NULL: not watched).
static __always_inline struct watch *watch_of_current(void)
{
	struct watch_set *set = watch_active ? &watch_set_1 : &watch_set_0;
	__u32 n = set->count;
	__u32 last = 0xffffffff;
	__u64 ancestor = 0;
	for (__u32 i = 0; i < MAX_WATCHES; i++) {
		if (i >= n)
			break;
		struct watch *w = &set->w[i];
		if (w->level != last) {
			last = w->level;
			ancestor = bpf_get_current_ancestor_cgroup_id(last);
		}
		if (ancestor == w->id)
			return w;
	}
	return NULL;
}

static __always_inline int watched_current(void)
{
	return watch_of_current() != NULL;
}

// group_of_current returns the id of the group the current thread's calls
// are counted in (0: not watched).
static __always_inline __u64 group_of_current(void)
{
	struct watch *w = watch_of_current();
	if (!w)
		return 0;
	__u64 id = w->id;
	__u32 level = w->level, depth = w->depth;
	// w points at another watch for each one the loop can stop at: with
	// only these scalars live from here on, the verifier checks what
	// follows once, not once per watch (which outgrows 6.1's limit).
	asm volatile("" : "+r"(id), "+r"(level), "+r"(depth));
	if (depth == DEPTH_SUBTREE)
		return id;
	if (depth) {
		// 0 when the thread's group is not that deep: then its own
		// group is the one.
		__u64 at = bpf_get_current_ancestor_cgroup_id(level + depth);
		if (at)
			return at;
	}
	return bpf_get_current_cgroup_id();
}

// row_of returns the row of group id, taking a free one at its first call,
// or row 0 when none is free.
static __always_inline __u32 row_of(__u64 id)
{
	__u32 *r = bpf_map_lookup_elem(&group_rows, &id);
	if (r)
		return *r;
	__u32 row;
	if (bpf_map_pop_elem(&free_rows, &row)) {
		daemon_add(DAEMON_OVERFLOW, 1);
		return 0;
	}
	// The id first: a row is named before any call is counted in it.
	__u32 key = row * ROW_SIZE + ROW_ID;
	__u64 *slot = bpf_map_lookup_elem(&rows, &key);
	if (slot)
		*slot = id;
	if (bpf_map_update_elem(&group_rows, &id, &row, BPF_NOEXIST) == 0)
		return row;
	// Another CPU gave this group a row meanwhile: use it, give ours back.
	daemon_add(DAEMON_ROW_RACE, 1);
	if (slot)
		*slot = 0;
	bpf_map_push_elem(&free_rows, &row, 0);
	r = bpf_map_lookup_elem(&group_rows, &id);
	if (r)
		return *r;
	daemon_add(DAEMON_OVERFLOW, 1);
	return 0;
}

// The entry finds the thread's group and row; the exit and signal_deliver
// count in the row the entry chose (kept in the call's task storage), and
// only test that the thread is watched at all.
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int sys_enter_sendfile64(struct sys_enter_sendfile64_ctx *ctx)
{
	__u64 id = group_of_current();
	if (!id)
		return 0;
	return enter_call(ctx->out_fd, ctx->in_fd, ctx->offset, ctx->count, row_of(id));
}

SEC("tracepoint/syscalls/sys_exit_sendfile64")
int sys_exit_sendfile64(struct sys_exit_sendfile64_ctx *ctx)
{
	if (!watched_current())
		return 0;
	return exit_call(ctx->ret, NO_ROW);
}

SEC("kprobe/__x64_sys_sendfile64")
int sys_enter_sendfile64_kprobe(struct x86_pt_regs *ctx)
{
	__u64 id = group_of_current();
	if (!id)
		return 0;
	return kprobe_enter(ctx, row_of(id));
}

SEC("kretprobe/__x64_sys_sendfile64")
int sys_exit_sendfile64_kretprobe(struct x86_pt_regs *ctx)
{
	if (!watched_current())
		return 0;
	return exit_call((__s64)ctx->ax, NO_ROW);
}

SEC("raw_tp/signal_deliver")
int signal_deliver(struct bpf_raw_tracepoint_args *ctx)
{
	if (!watched_current())
		return 0;
	return settle_signal(ctx);
}

// Context of cgroup/cgroup_mkdir and cgroup/cgroup_rmdir, from
// /sys/kernel/tracing/events/cgroup/cgroup_mkdir/format.
struct cgroup_ctx {
	__u64 common;
	__s32 root;     // hierarchy id: 0 is cgroup v2's
	__s32 level;
	__u64 id;
	__u32 path_loc; // __data_loc char[]: offset in the low 16 bits
};

static __always_inline int group_event(struct cgroup_ctx *ctx, __u32 kind)
{
	if (ctx->root != 0)
		return 0; // a cgroup v1 hierarchy
	struct group_event *e = bpf_ringbuf_reserve(&group_events, sizeof(*e), 0);
	if (!e) {
		daemon_add(DAEMON_GROUPS_LOST, 1);
		return 0;
	}
	e->id = ctx->id;
	e->kind = kind;
	e->level = ctx->level;
	e->flags = 0;
	long n = bpf_probe_read_kernel_str(e->path, sizeof(e->path),
					   (void *)ctx + (ctx->path_loc & 0xffff));
	if (n < 0)
		n = 1;
	if (n >= sizeof(e->path))
		e->flags = GROUP_PATH_CUT;
	e->len = n - 1;
	// Rare, and the daemon waits for them: wake it each time.
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

// A group is created: its id and path reach the daemon before any of its
// threads can call sendfile, and a watched path that did not exist yet is
// watched from here on.
SEC("tracepoint/cgroup/cgroup_mkdir")
int cgroup_mkdir(struct cgroup_ctx *ctx)
{
	return group_event(ctx, GROUP_MKDIR);
}

// A group is removed: its row can be read a last time and given back.
SEC("tracepoint/cgroup/cgroup_rmdir")
int cgroup_rmdir(struct cgroup_ctx *ctx)
{
	return group_event(ctx, GROUP_RMDIR);
}
