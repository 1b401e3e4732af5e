// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

// The floor of the benchmark: the same two tracepoints sfwatch attaches,
// with programs that return at once. What a traced call costs beyond this
// is what sfwatch's own work (filter, maps, ring buffer, consumer) adds.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tracepoint/syscalls/sys_enter_sendfile64")
int floor_enter(void *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendfile64")
int floor_exit(void *ctx)
{
	return 0;
}
