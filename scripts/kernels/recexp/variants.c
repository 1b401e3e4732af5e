// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

// Experiment (issue 14): sfwatch's own sendfile bodies behind other entry
// points, to measure recursion misses where syscall tracepoints run BPF
// preemptibly (7.2+). body.h is bpf/sfwatch.c with the two sendfile
// programs turned into inline functions (gen.sh); nothing here is loaded by
// sfwatch itself.

#include "body.h"

// 6.10+: kernel BTF resolves them; absent elsewhere (then not called).
extern void bpf_preempt_disable(void) __ksym __weak;
extern void bpf_preempt_enable(void) __ksym __weak;

// (a) as sfwatch: the bodies on the syscall tracepoints.
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int tp_enter(struct sys_enter_sendfile64_ctx *ctx) { return enter_body(ctx); }
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int tp_exit(struct sys_exit_sendfile64_ctx *ctx) { return exit_body(ctx); }

// (b) the same, inside bpf_preempt_disable()/bpf_preempt_enable().
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int pd_enter(struct sys_enter_sendfile64_ctx *ctx)
{
	bpf_preempt_disable();
	enter_body(ctx);
	bpf_preempt_enable();
	return 0;
}
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int pd_exit(struct sys_exit_sendfile64_ctx *ctx)
{
	bpf_preempt_disable();
	exit_body(ctx);
	bpf_preempt_enable();
	return 0;
}

// (d) kprobe + kretprobe on __x64_sys_sendfile64: the syscall's arguments
// are in the user pt_regs its first argument points at (x86-64 offsets:
// dx 96, si 104, di 112, r10 56).
struct kregs { __u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax; };

SEC("kprobe/__x64_sys_sendfile64")
int kp_enter(struct kregs *ctx)
{
	struct kregs u;
	if (bpf_probe_read_kernel(&u, sizeof(u), (void *)ctx->di))
		return 0;
	struct sys_enter_sendfile64_ctx c = {
		.out_fd = u.di, .in_fd = u.si, .offset = u.dx, .count = u.r10,
	};
	return enter_body(&c);
}
SEC("kretprobe/__x64_sys_sendfile64")
int kp_exit(struct kregs *ctx)
{
	struct sys_exit_sendfile64_ctx c = { .ret = (__s64)ctx->ax };
	return exit_body(&c);
}

// (e) raw tracepoints sys_enter/sys_exit (every syscall; filtered on the
// number first). trace_sys_enter(struct pt_regs *regs, long id),
// trace_sys_exit(struct pt_regs *regs, long ret).
#define NR_sendfile64 40 // x86-64
SEC("raw_tp/sys_enter")
int raw_enter(struct bpf_raw_tracepoint_args *ctx)
{
	if (ctx->args[1] != NR_sendfile64)
		return 0;
	struct kregs u;
	if (bpf_probe_read_kernel(&u, sizeof(u), (void *)ctx->args[0]))
		return 0;
	struct sys_enter_sendfile64_ctx c = {
		.out_fd = u.di, .in_fd = u.si, .offset = u.dx, .count = u.r10,
	};
	return enter_body(&c);
}
SEC("raw_tp/sys_exit")
int raw_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 nr = 0;
	bpf_probe_read_kernel(&nr, sizeof(nr), (void *)(ctx->args[0] + 120)); // orig_ax
	if (nr != NR_sendfile64)
		return 0;
	struct sys_exit_sendfile64_ctx c = { .ret = (__s64)ctx->args[1] };
	return exit_body(&c);
}

// (c) the floor: empty programs on the syscall tracepoints.
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int empty_enter(void *ctx) { return 0; }
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int empty_exit(void *ctx) { return 0; }
