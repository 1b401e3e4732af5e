// signals: sendfile calls blocked on a full pipe, each interrupted by a
// burst of signals that all arrive before the thread runs again, so that
// the kernel delivers them on one return to user space. Only the first
// signal that runs a handler decides between restart and EINTR; the
// others, and stops, must not change what the program sees.
//
// Usage: signals ROUND...   where ROUND is a list of SIG:KIND joined by
// ',', KIND one of r (handler with SA_RESTART), p (plain handler), i
// (ignored), s (default action, a stop; SIGCONT follows). Within a burst
// the kernel delivers lower signal numbers first, so the caller picks the
// numbers for the order it wants.
//
// Prints "fds OUT IN", then per round "ROUND RET ERRNO".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

#define MAX_SIGS 8

struct burst {
	int n;
	int sig[MAX_SIGS];
	char kind[MAX_SIGS];
};

static void on_signal(int sig) { (void)sig; }

static int parse(const char *s, struct burst *b)
{
	b->n = 0;
	while (*s && b->n < MAX_SIGS) {
		char kind;
		int sig, used;
		if (sscanf(s, "%d:%c%n", &sig, &kind, &used) != 2)
			return -1;
		b->sig[b->n] = sig;
		b->kind[b->n++] = kind;
		s += used;
		if (*s == ',')
			s++;
	}
	return *s ? -1 : 0;
}

// dispose installs the dispositions of one round; the stop keeps SIG_DFL.
static void dispose(const struct burst *b)
{
	for (int i = 0; i < b->n; i++) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		switch (b->kind[i]) {
		case 'r':
			sa.sa_handler = on_signal;
			sa.sa_flags = SA_RESTART;
			break;
		case 'p':
			sa.sa_handler = on_signal;
			break;
		case 'i':
			sa.sa_handler = SIG_IGN;
			break;
		default:
			sa.sa_handler = SIG_DFL;
		}
		sigaction(b->sig[i], &sa, NULL);
	}
}

// interrupter runs in a child: for each round it waits until the parent
// is blocked in sendfile, sends the burst, continues a stop, then empties
// the pipe until the parent says the round is over, and says when it is
// empty (so the next round starts with the pipe filled again). It runs SCHED_FIFO on
// the parent's CPU, so the parent cannot run between two of its kill()s.
static void interrupter(pid_t parent, int data, int done, int ack, int rounds, struct burst *bursts)
{
	struct sched_param sp = {.sched_priority = 1};
	cpu_set_t cpus;
	CPU_ZERO(&cpus);
	CPU_SET(0, &cpus);
	if (sched_setaffinity(0, sizeof cpus, &cpus) || sched_setaffinity(parent, sizeof cpus, &cpus) ||
	    sched_setscheduler(0, SCHED_FIFO, &sp)) {
		perror("signals: pinning the interrupter");
		_exit(1);
	}
	static char buf[65536];
	for (int r = 0; r < rounds; r++) {
		while (!in_sendfile(parent))
			usleep(1000);
		usleep(2000); // well inside the pipe's wait, not on its way in
		int stop = 0;
		for (int i = 0; i < bursts[r].n; i++) {
			kill(parent, bursts[r].sig[i]);
			stop |= bursts[r].kind[i] == 's';
		}
		usleep(20000);
		// A SIGCONT that came before the stop took effect would
		// cancel it, and the call would go on as if never interrupted.
		if (stop) {
			for (int ms = 0; !stopped(parent); ms++) {
				if (ms == 5000)
					_exit(4);
				usleep(1000);
			}
			kill(parent, SIGCONT);
		}
		// Read until the parent's round is over, then what is left.
		struct pollfd pfd[2] = {{.fd = data, .events = POLLIN}, {.fd = done, .events = POLLIN}};
		for (;;) {
			if (poll(pfd, 2, 5000) <= 0)
				_exit(2);
			if (pfd[0].revents & POLLIN)
				(void)read(data, buf, sizeof buf);
			if (pfd[1].revents & POLLIN) {
				char c;
				if (read(done, &c, 1) != 1)
					_exit(3);
				while (read(data, buf, sizeof buf) > 0)
					;
				if (write(ack, "x", 1) != 1)
					_exit(3);
				break;
			}
		}
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	int rounds = argc - 1;
	struct burst *bursts = calloc(rounds ? rounds : 1, sizeof *bursts);
	for (int r = 0; r < rounds; r++) {
		if (parse(argv[r + 1], &bursts[r])) {
			fprintf(stderr, "signals: bad round %s\n", argv[r + 1]);
			return 2;
		}
	}
	int pipefd[2], done[2], ack[2];
	if (pipe2(pipefd, O_NONBLOCK) || pipe(done) || pipe(ack))
		return 2;
	int in = open("/proc/self/exe", O_RDONLY); // any file of 4 KiB or more
	if (in < 0)
		return 2;
	printf("fds %d %d\n", pipefd[1], in);
	fflush(stdout);

	pid_t parent = getpid();
	pid_t child = fork();
	if (child == 0) {
		close(pipefd[1]);
		close(done[1]);
		close(ack[0]);
		interrupter(parent, pipefd[0], done[0], ack[1], rounds, bursts);
	}
	close(done[0]);
	close(ack[1]);

	static char chunk[65536];
	for (int r = 0; r < rounds; r++) {
		dispose(&bursts[r]);
		lseek(in, 0, SEEK_SET); // a NULL offset moves the file position
		// Fill the pipe without blocking, then block in sendfile on it
		// before any byte moves.
		fcntl(pipefd[1], F_SETFL, O_NONBLOCK);
		while (write(pipefd[1], chunk, sizeof chunk) > 0 || errno == EINTR)
			;
		fcntl(pipefd[1], F_SETFL, 0);
		ssize_t ret = sendfile(pipefd[1], in, NULL, 4096);
		printf("%s %zd %d\n", argv[r + 1], ret, ret < 0 ? errno : 0);
		fflush(stdout);
		char c;
		if (write(done[1], "x", 1) != 1 || read(ack[0], &c, 1) != 1)
			return 2;
	}
	int status;
	if (waitpid(child, &status, 0) != child)
		return 3;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 3;
}
