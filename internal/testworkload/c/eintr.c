// eintr: two sendfile calls blocked on a full pipe and interrupted by
// SIGUSR1, the first under a handler without SA_RESTART (the program gets
// EINTR), the second with SA_RESTART (the kernel restarts it and it
// completes). Go's runtime sets SA_RESTART on every handler, so the first
// case needs C. Prints "fds OUT IN", then "A RET ERRNO" and "B RET ERRNO".
// A pipe, not a socket: before 6.5 a sendfile to a full unix socket does not
// block (it appends to the reader's last buffer); to a full pipe it does.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

static void on_usr1(int sig) { (void)sig; }

static void interrupt_in_sendfile(pid_t pid)
{
	while (!in_sendfile(pid))
		usleep(1000);
	kill(pid, SIGUSR1);
}

int main(void)
{
	int pv[2], sync[2];
	if (pipe(pv) || pipe(sync))
		return 2;
	int sv[2] = {pv[1], pv[0]}; // sv[0] is written to, sv[1] read from
	int in = open("/proc/self/exe", O_RDONLY); // any file of 4 KiB or more
	if (in < 0)
		return 2;
	printf("fds %d %d\n", sv[0], in);
	fflush(stdout);

	// Fill the pipe: a sendfile to it blocks before moving a byte.
	static char chunk[65536];
	long filled = 0;
	ssize_t n;
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	while ((n = write(sv[0], chunk, sizeof chunk)) > 0)
		filled += n;
	fcntl(sv[0], F_SETFL, 0);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1; // sa_flags 0: no SA_RESTART
	sigaction(SIGUSR1, &sa, NULL);

	pid_t parent = getpid();
	pid_t helper = fork();
	if (helper == 0) {
		char c;
		interrupt_in_sendfile(parent); // A: EINTR
		if (read(sync[0], &c, 1) != 1) // A returned, SA_RESTART is set
			_exit(1);
		interrupt_in_sendfile(parent); // B: restarted
		usleep(50000);
		for (long want = filled + 4096; want > 0 && (n = read(sv[1], chunk, sizeof chunk)) > 0;)
			want -= n;
		_exit(0);
	}

	ssize_t a = sendfile(sv[0], in, NULL, 4096);
	int a_errno = a < 0 ? errno : 0;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	printf("A %zd %d\n", a, a_errno);
	fflush(stdout);
	if (write(sync[1], "x", 1) != 1)
		return 2;
	ssize_t b = sendfile(sv[0], in, NULL, 4096);
	printf("B %zd %d\n", b, b < 0 ? errno : 0);
	int status;
	waitpid(helper, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 3;
}
