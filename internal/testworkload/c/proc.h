// proc.h: what the C test programs read of each other in /proc.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

// proc_read reads /proc/PID/FILE into buf (NUL-terminated); its length, or
// -1.
static inline ssize_t proc_read(pid_t pid, const char *file, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return n;
}

// in_sendfile: /proc/PID/syscall starts with the number of the system
// call the task is blocked in (40, sendfile, on x86-64).
static inline int in_sendfile(pid_t pid)
{
	char buf[64];
	return proc_read(pid, "syscall", buf, sizeof buf) > 3 && strncmp(buf, "40 ", 3) == 0;
}

// stopped: the task's state in /proc/PID/stat is T.
static inline int stopped(pid_t pid)
{
	char buf[256];
	char *paren = proc_read(pid, "stat", buf, sizeof buf) > 0 ? strrchr(buf, ')') : NULL;
	return paren && paren[1] == ' ' && paren[2] == 'T';
}
