// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

// sfwatch's gate: the first program a client's command runs through the
// daemon. It waits for one byte on a pipe, then execs the command: until
// the byte comes, the daemon has time to move it into the run's group, and
// it has run nothing of the command. A static binary of a few hundred
// bytes, with no libc: it starts in microseconds, and the daemon knows it
// by its inode (the one it installed), so it knows nothing else runs yet.
//
//   gate FD PATH ARGV0 [ARGS...]   environment: the command's, untouched
//
// 'x' on FD: execve(PATH, ARGV0 ARGS..., environment); exit 127 when PATH
// is gone, 126 when it cannot run. Anything else, or the pipe's end (the
// client died or gave up): exit 125, the command never run.
//
// Built by `make gate` (gcc, x86-64), committed as gate_amd64.bin.

#define SYS_read 0
#define SYS_write 1
#define SYS_close 3
#define SYS_execve 59
#define SYS_exit 60
#define EINTR 4
#define ENOENT 2

static long sys3(long n, long a, long b, long c)
{
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}

__attribute__((noreturn)) static void leave(long code)
{
	for (;;)
		sys3(SYS_exit, code, 0, 0);
}

static long length(const char *s)
{
	long n = 0;
	while (s[n])
		n++;
	return n;
}

static void say(const char *s) { sys3(SYS_write, 2, (long)s, length(s)); }

__attribute__((used, noreturn)) void gate(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	if (argc < 4)
		leave(125);
	long fd = 0;
	for (const char *p = argv[1]; *p; p++) {
		if (*p < '0' || *p > '9')
			leave(125);
		fd = fd * 10 + (*p - '0');
	}
	char b = 0;
	long n;
	do
		n = sys3(SYS_read, fd, (long)&b, 1);
	while (n == -EINTR);
	sys3(SYS_close, fd, 0, 0);
	if (n != 1 || b != 'x')
		leave(125);
	long err = sys3(SYS_execve, (long)argv[2], (long)(argv + 3), (long)envp);
	say("sfwatch: ");
	say(argv[2]);
	say(err == -ENOENT ? ": no such file\n" : ": cannot execute\n");
	leave(err == -ENOENT ? 127 : 126);
}

// The kernel starts a process with argc at the stack pointer; the ABI
// wants it 16-byte aligned at a call.
__asm__(".globl _start\n"
	"_start:\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call gate\n"
	"	hlt\n");
