// Package child starts the traced program inside a cgroup v2 group (see
// package cgroup) and waits for it.
//
// Start creates the child directly inside the group with
// clone3(CLONE_INTO_CGROUP), so the child's first instruction, and
// everything it ever forks (daemons that double-fork and setsid included),
// already runs in the group: no ptrace, no moving a running pid. Resolve
// and CheckUser let a caller refuse a bad command or user before it creates
// a group.
//
// Descriptors: everything this package opens is close-on-exec, so the child
// gets only Stdin, Stdout, Stderr and ExtraFiles, plus whatever sfwatch itself
// inherited without close-on-exec (a shell's 3>file, systemd's socket
// activation), which passes through as with any exec.
//
// Signals, with Spec.ForwardSignals (what `sfwatch run` does): each of SIGINT,
// SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 reaches the child exactly
// once. The child gets a process group of its own, so that it is never
// signalled both as a member of ours and by us.
//
//   - At a terminal (our stdin is a tty and our process group is its
//     foreground group), the child's process group becomes the terminal's
//     foreground group, as a shell does for a job: Ctrl-C, Ctrl-\ and Ctrl-Z
//     go to the child alone, straight from the terminal, and sfwatch (now in
//     the background) does not see them. When the child exits, Process.Wait
//     makes our process group the foreground again. One consequence: with
//     `stty tostop`, sfwatch writing to the terminal while the child runs is
//     stopped by SIGTTOU, as any background job would be.
//   - Not at a terminal (CI, pipes, a service manager), nothing sends the
//     child signals but us: a signal sent to sfwatch (kill PID) is forwarded
//     to the child's pid.
//
// In both cases signals sent to sfwatch itself are forwarded until Wait
// returns. Without ForwardSignals the child stays in our process group and
// signals reach it as they would reach any exec.Cmd child.
package child
