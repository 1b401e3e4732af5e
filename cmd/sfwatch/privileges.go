package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// neededCaps are what tracing needs when not all of root's: BPF programs
// and maps, tracepoint events, cgroup.kill and clone3 into a group, and
// reading tracefs and making a group at the cgroup2 root, both root's
// only (without CAP_DAC_OVERRIDE the group's mkdir fails).
var neededCaps = []struct {
	bit  uint
	name string
}{
	{unix.CAP_BPF, "CAP_BPF"},
	{unix.CAP_PERFMON, "CAP_PERFMON"},
	{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
	{unix.CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"},
}

// privileges says how this process may trace (for doctor), or why it may
// not: run, attach, selftest and doctor all decide here.
func privileges() (string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return "", fmt.Errorf("reading this process's capabilities: %w", err)
	}
	return privilegeDecision(os.Geteuid(), uint64(data[1].Effective)<<32|uint64(data[0].Effective))
}

// privilegeDecision decides for effective uid euid and effective
// capability set eff. Root is no exception: root without CAP_BPF (a
// container) cannot trace either.
func privilegeDecision(euid int, eff uint64) (string, error) {
	var missing, all []string
	for _, c := range neededCaps {
		all = append(all, c.name)
		if eff&(1<<c.bit) == 0 {
			missing = append(missing, c.name)
		}
	}
	who := "root"
	if euid != 0 {
		who = fmt.Sprintf("uid %d", euid)
	}
	if len(missing) == 0 {
		if euid == 0 {
			return "root", nil
		}
		return who + " with " + strings.Join(all, ", "), nil
	}
	return "", fmt.Errorf("needs root (or %s) to load BPF programs and create cgroups; %s lacks %s: run it with sudo",
		strings.Join(all, ", "), who, strings.Join(missing, ", "))
}

// requirePrivileges is privileges for a command: its error names it.
func requirePrivileges(command string) error {
	if _, err := privileges(); err != nil {
		return fmt.Errorf("%s %w", command, err)
	}
	return nil
}
