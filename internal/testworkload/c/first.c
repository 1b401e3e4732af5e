// first: a program whose first system call is sendfile: no libc, no
// dynamic loader, nothing runs before it. Built with -nostdlib -static.
void _start(void)
{
	long ret;
	/* sendfile(999, 0, NULL, 0): EBADF */
	__asm__ volatile ("syscall" : "=a"(ret) : "a"(40L), "D"(999L), "S"(0L), "d"(0L), "r"(0L) : "rcx", "r11", "memory");
	/* exit_group(0) */
	__asm__ volatile ("syscall" : : "a"(231L), "D"(0L) : "rcx", "r11", "memory");
	for (;;) {}
}
