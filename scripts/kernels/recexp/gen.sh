#!/bin/sh
# body.h: bpf/sfwatch.c without its four sendfile programs, plus inline
# functions enter_body and exit_body over its enter_call and exit_call, for
# variants.c.
set -e
cd "$(dirname "$0")"
{
	sed -E -e '/^SEC\("(tracepoint\/syscalls\/sys_(enter|exit)_sendfile64|k(ret)?probe\/__x64_sys_sendfile64)"\)$/,/^}$/d' \
		-e '/^\/\/go:build ignore$/d' \
		../../../bpf/sfwatch.c
	cat <<-'BODY'
	static __always_inline int enter_body(struct sys_enter_sendfile64_ctx *ctx)
	{
		if (!watched())
			return 0;
		return enter_call(ctx->out_fd, ctx->in_fd, ctx->offset, ctx->count);
	}
	static __always_inline int exit_body(struct sys_exit_sendfile64_ctx *ctx)
	{
		if (!watched())
			return 0;
		return exit_call(ctx->ret);
	}
	BODY
} >body.h
! grep -q '^SEC("k\|^SEC("tracepoint' body.h
