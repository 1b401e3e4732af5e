// Package cgroup finds, creates, opens, kills and removes the cgroup v2
// groups that sfwatch watches.
//
// New creates <cgroup2 mount>/sfwatch-<pid>-<start>-<seq>; its inode number
// is the cgroup id that the BPF programs compare ancestors against. Open and
// OfPID open an existing group (`sfwatch attach`), which is never killed or
// removed. Group.Kill ends every process in a group with cgroup.kill (Linux
// 5.14+; before, by freezing the group and killing each pid in it), and
// Group.Close removes a group that New created. Group.StartWatchdog starts a
// helper that does both should the owner die first; groups left behind all
// the same are removed by the next New.
//
// Everything this package opens is close-on-exec: a process started in a
// group (Group.FD, for clone3's CLONE_INTO_CGROUP) gets none of it.
package cgroup
