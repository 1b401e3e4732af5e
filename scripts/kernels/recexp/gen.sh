#!/bin/sh
# body.h: bpf/sfwatch.c with its two sendfile programs as inline functions
# enter_body and exit_body, for variants.c.
set -e
cd "$(dirname "$0")"
sed -E -e '/^SEC\("tracepoint\/syscalls\/sys_(enter|exit)_sendfile64"\)$/d' \
	-e 's/^int sys_enter_sendfile64\(/static __always_inline int enter_body(/' \
	-e 's/^int sys_exit_sendfile64\(/static __always_inline int exit_body(/' \
	-e '/^\/\/go:build ignore$/d' \
	../../../bpf/sfwatch.c >body.h
grep -q enter_body body.h && grep -q exit_body body.h
