package cgroup

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// groupPrefix starts the name of every group New creates:
// sfwatch-<pid>-<start>-<seq>, directly below the cgroup2 root, where start
// is the creator's start time (field 22 of /proc/PID/stat): with the pid it
// names one process for the life of the system, so a sweep can tell a live
// owner from a dead one without any lock.
const groupPrefix = "sfwatch-"

// killTimeout bounds how long Kill waits for a killed group to empty. SIGKILL
// cannot be caught, so only a task stuck in the kernel (D state) takes long.
const killTimeout = 10 * time.Second

// seq numbers the groups of this process, so that several can exist at once
// (parallel tests, say).
var seq atomic.Uint64

// Mount returns the mount point of the cgroup v2 hierarchy, from
// /proc/self/mountinfo: /sys/fs/cgroup on a pure v2 host,
// /sys/fs/cgroup/unified on a hybrid one.
func Mount() (string, error) {
	mount, _, err := mountAndOptions()
	return mount, err
}

func mountAndOptions() (mount string, options []string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", nil, fmt.Errorf("finding the cgroup2 mount: %w", err)
	}
	defer f.Close()
	return parseMount(f)
}

// parseMount returns the mount point and the super options (the file
// system's own: nsdelegate, favordynmods, ...) of the first cgroup2 line
// of a mountinfo table:
//
//	ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
func parseMount(r io.Reader) (string, []string, error) {
	s := bufio.NewScanner(r)
	// Overlay mounts with many layers make lines longer than the default 64 KiB.
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		sep := slices.Index(fields, "-")
		if sep >= 5 && sep+1 < len(fields) && fields[sep+1] == "cgroup2" {
			var options []string
			if sep+3 < len(fields) {
				options = strings.Split(fields[sep+3], ",")
			}
			return unescapeMountinfo(fields[4]), options, nil
		}
	}
	if err := s.Err(); err != nil {
		return "", nil, fmt.Errorf("finding the cgroup2 mount: reading mountinfo: %w", err)
	}
	return "", nil, errors.New("finding the cgroup2 mount: no cgroup2 file system in /proc/self/mountinfo (is cgroup v2 mounted?)")
}

// FavorDynmods turns on the cgroup2 mount option favordynmods (Linux 6.0+)
// unless it is on already, and returns what puts the mount back (nil when
// nothing changed). Without it, moving a process between groups (what the
// daemon does for each client run) may wait for an RCU grace period, 8 to
// 16 ms here; with it, it takes 0.2 ms. The kernel documents its cost as
// forks and exits made slower; sfwatch measured none above noise (README).
func FavorDynmods() (restore func() error, err error) {
	mount, options, err := mountAndOptions()
	if err != nil {
		return nil, err
	}
	if slices.Contains(options, "favordynmods") {
		return nil, nil
	}
	// The file system's own options, as they are: a remount without one
	// of them (nsdelegate, say) would turn it off.
	var own []string
	for _, o := range options {
		if o != "rw" && o != "ro" {
			own = append(own, o)
		}
	}
	remount := func(opts []string) error {
		return unix.Mount("", mount, "", unix.MS_REMOUNT, strings.Join(opts, ","))
	}
	if err := remount(append(slices.Clip(own), "favordynmods")); err != nil {
		return nil, fmt.Errorf("remounting %s with favordynmods: %w", mount, err)
	}
	return func() error {
		if err := remount(own); err != nil {
			return fmt.Errorf("remounting %s without favordynmods: %w", mount, err)
		}
		return nil
	}, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if c, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Group is a cgroup v2 directory.
//
// Level counts from the root of the cgroup2 mount, which is the root of the
// hierarchy on a host. Inside a container's cgroup namespace it is not, and
// Level (what the BPF side compares at) would come out too small.
type Group struct {
	Path  string // absolute path under the cgroup2 mount
	Rel   string // path below the mount, as the kernel prints it: "/", "/sfwatch-1-1"
	ID    uint64 // cgroup id == inode number of the directory (what bpf_get_current_ancestor_cgroup_id returns)
	Level uint32 // depth below the cgroup2 root (root = 0, <mount>/a = 1, <mount>/a/b = 2)

	owned bool // created by New: Close kills and removes it
	// dir is the group's directory, open for the group's whole life: FD
	// hands it to clone3 (CLONE_INTO_CGROUP).
	dir *os.File

	closeOnce sync.Once
	closeErr  error
}

// New creates an owned group <mount>/sfwatch-<pid>-<start>-<seq>;
// Close kills whatever runs in it and removes it.
//
// It first removes the groups that crashed earlier runs left behind: a group
// whose creator no longer runs (its pid is gone, or belongs to a process that
// started at another time) has its processes killed and is removed. That
// sweep is best effort: a leftover that cannot be removed now must not stop a
// new run, and every later New tries again.
//
// No lock is taken: a group is swept only when its creator is dead, so a
// concurrent New's group, between its mkdir and its open, is never taken
// for stale (and a lock on a file that users can open would let any user
// hold every run back).
func New() (*Group, error) {
	mount, err := Mount()
	if err != nil {
		return nil, err
	}
	start, err := procStart(os.Getpid())
	if err != nil {
		return nil, err
	}
	removeStale(mount)
	for {
		name := fmt.Sprintf("%s%d-%d-%d", groupPrefix, os.Getpid(), start, seq.Add(1)-1)
		path := filepath.Join(mount, name)
		err := os.Mkdir(path, 0o755)
		if errors.Is(err, fs.ErrExist) {
			// A leftover of ours that the sweep could not remove.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", path, err)
		}
		g, err := openGroup(mount, name, true, path)
		if err != nil {
			os.Remove(path)
			return nil, err
		}
		return g, nil
	}
}

// removeStale kills and removes the groups of dead owners at the cgroup2 root.
func removeStale(mount string) {
	entries, err := os.ReadDir(mount)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, start, ok := groupOwner(e.Name())
		if ok && e.IsDir() && !running(pid, start) {
			killAndRemove(filepath.Join(mount, e.Name()))
		}
	}
}

// groupOwner returns the creator in a name of the form
// sfwatch-<pid>-<start>-<seq>, or sfwatch-<pid>-<seq> (earlier versions,
// start 0: unknown).
func groupOwner(name string) (pid int, start uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, groupPrefix)
	if !ok {
		return 0, 0, false
	}
	fields := strings.Split(rest, "-")
	if len(fields) != 2 && len(fields) != 3 {
		return 0, 0, false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return 0, 0, false
	}
	for _, f := range fields[1:] {
		if _, err := strconv.ParseUint(f, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	if len(fields) == 3 {
		start, _ = strconv.ParseUint(fields[1], 10, 64)
	}
	return pid, start, true
}

// running reports whether the process that created a group still runs:
// pid exists and, when start is known, started at start. When it cannot
// tell, it says true: leave the group alone. An unknown start (a group of an
// earlier version) counts any process with that pid as its creator, so such
// a leftover waits until that pid is free.
func running(pid int, start uint64) bool {
	got, err := procStart(pid)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	return err != nil || start == 0 || got == start
}

// procStart returns when process pid started, in clock ticks after boot
// (field 22 of /proc/PID/stat).
func procStart(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the start time of pid %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold anything:
	// count fields after its last ')'. Field 3 is the first one there.
	var fields []string
	if i := bytes.LastIndexByte(data, ')'); i >= 0 {
		fields = strings.Fields(string(data[i+1:]))
	}
	if len(fields) < 20 {
		return 0, fmt.Errorf("reading the start time of pid %d: unexpected /proc/%d/stat", pid, pid)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading the start time of pid %d: %w", pid, err)
	}
	return start, nil
}

// Open opens an existing group (for `sfwatch attach --cgroup PATH`). PATH
// is absolute under the cgroup2 mount, or relative to it; an absolute path
// outside the mount is taken as /proc/PID/cgroup shows it
// (/system.slice/x.service), so relative to the mount too. A path that ".."
// takes out of the mount is refused. Errors name PATH as given. The group is
// not owned: Close never kills or removes it.
func Open(path string) (*Group, error) {
	mount, err := Mount()
	if err != nil {
		return nil, err
	}
	rel, err := groupRel(mount, path)
	if err != nil {
		return nil, fmt.Errorf("opening cgroup %s: %w", path, err)
	}
	return openGroup(mount, rel, false, path)
}

// groupRel returns the path of the group that path names, relative to the
// cgroup2 mount.
func groupRel(mount, path string) (string, error) {
	if r, err := filepath.Rel(mount, path); filepath.IsAbs(path) && err == nil && filepath.IsLocal(r) {
		return r, nil
	}
	outside := fmt.Errorf("leaves the cgroup2 mount %s; give a path below it", mount)
	if strings.HasPrefix(path, mount+"/") {
		return "", outside // under the mount as typed, above it once ".." is applied
	}
	rel := filepath.Join(".", path)
	if !filepath.IsLocal(rel) {
		return "", outside
	}
	return rel, nil
}

// OfPID opens the cgroup v2 group that process pid is in, from the
// "0::/path" line of /proc/PID/cgroup. The group is not owned.
func OfPID(pid int) (*Group, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("finding the cgroup of pid %d: no such process", pid)
	}
	if err != nil {
		return nil, fmt.Errorf("finding the cgroup of pid %d: %w", pid, err)
	}
	for line := range strings.Lines(string(data)) {
		if path, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			return Open(path)
		}
	}
	return nil, fmt.Errorf("finding the cgroup of pid %d: no cgroup v2 line (0::) in /proc/%d/cgroup", pid, pid)
}

// openGroup opens the group at rel, a local path below mount; errors name
// it as given, given.
func openGroup(mount, rel string, owned bool, given string) (*Group, error) {
	path := filepath.Join(mount, rel)
	// os.OpenFile adds O_CLOEXEC: the descriptor never reaches a child.
	dir, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("opening cgroup %s: no such group (a process's own is the 0:: line of /proc/PID/cgroup)", given)
	}
	if err != nil {
		return nil, fmt.Errorf("opening cgroup %s: %w", given, errors.Unwrap(err))
	}
	fi, err := dir.Stat()
	if err != nil {
		dir.Close()
		return nil, fmt.Errorf("opening cgroup %s: %w", given, err)
	}
	var level uint32
	if rel = filepath.Clean(rel); rel != "." {
		level = uint32(strings.Count(rel, "/") + 1)
	}
	return &Group{
		Path:  path,
		Rel:   filepath.Join("/", rel),
		ID:    fi.Sys().(*syscall.Stat_t).Ino,
		Level: level,
		owned: owned,
		dir:   dir,
	}, nil
}

// Procs returns the pids in this group and in all groups below it.
func (g *Group) Procs() ([]int, error) {
	var pids []int
	err := filepath.WalkDir(g.Path, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			err = appendProcs(&pids, path)
		}
		if path != g.Path && errors.Is(err, fs.ErrNotExist) {
			return nil // a child group removed while we walk
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing processes of cgroup %s: %w", g.Path, err)
	}
	return pids, nil
}

// appendProcs appends the pids of one group, not of its child groups.
func appendProcs(pids *[]int, path string) error {
	data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("parsing %s/cgroup.procs: %w", path, err)
		}
		*pids = append(*pids, pid)
	}
	return nil
}

// Removed reports whether the group's directory is gone (or another group
// now has its path): rmdir of an empty group, for one that attach watches.
func (g *Group) Removed() bool {
	fi, err := os.Stat(g.Path)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	return fi.Sys().(*syscall.Stat_t).Ino != g.ID
}

// FD returns the descriptor of the group's directory, for clone3
// (CLONE_INTO_CGROUP) to start a process inside the group. It is
// close-on-exec, and valid until Close.
func (g *Group) FD() int { return int(g.dir.Fd()) }

// Kill kills every process in the group and below it (cgroup.kill: SIGKILL,
// including processes forked meanwhile) and waits, at most killTimeout, until
// the group is empty. Without cgroup.kill (before Linux 5.14) it freezes the
// group and sends SIGKILL to each pid in it until it is empty.
func (g *Group) Kill() error {
	return kill(g.Path)
}

// Close releases the group. An owned group is killed, then removed with any
// child groups its processes created; a group from Open or OfPID is
// only closed. Calls after the first return nil.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		if g.owned {
			g.closeErr = killAndRemove(g.Path)
		}
		g.closeErr = errors.Join(g.closeErr, g.dir.Close())
	})
	return g.closeErr
}

func killAndRemove(path string) error {
	if err := kill(path); err != nil {
		return err
	}
	return removeTree(path)
}

// HasCgroupKill reports whether the kernel has cgroup.kill (Linux 5.14+);
// without it, Kill signals each process itself.
func (g *Group) HasCgroupKill() bool {
	_, err := os.Stat(filepath.Join(g.Path, "cgroup.kill"))
	return err == nil && !forceKillFallback
}

// forceKillFallback makes kill act as on a kernel without cgroup.kill: a
// test sets it to exercise that path here.
var forceKillFallback bool

func kill(path string) error {
	// Stat, not the write's error: writing a file that cgroupfs does not
	// have fails with EACCES (it cannot be created), as a real denial does.
	_, err := os.Stat(filepath.Join(path, "cgroup.kill"))
	fallback := forceKillFallback || errors.Is(err, fs.ErrNotExist)
	if !fallback {
		if err := os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0); err != nil {
			return fmt.Errorf("killing cgroup %s: %w", path, err)
		}
	} else {
		// Frozen, the group neither forks nor reaps, so a pid read from
		// cgroup.procs is not reused before the SIGKILL reaches it; SIGKILL
		// still ends a frozen task. Best effort: the loop catches stragglers.
		os.WriteFile(filepath.Join(path, "cgroup.freeze"), []byte("1"), 0)
	}
	deadline := time.Now().Add(killTimeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		busy, err := populated(path)
		if err != nil || !busy {
			return err
		}
		if fallback {
			killProcs(path)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("killing cgroup %s: still populated after %v", path, killTimeout)
		}
		time.Sleep(delay)
	}
}

// killProcs sends SIGKILL to every process in the group and below it.
func killProcs(path string) {
	var pids []int
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			appendProcs(&pids, p) // a group gone meanwhile has no one left to kill
		}
		return nil
	})
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// populated reports whether any process runs in the group or below it.
func populated(path string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(path, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("reading cgroup %s events: %w", path, err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "populated "); ok {
			return v != "0", nil
		}
	}
	return false, fmt.Errorf("reading cgroup %s events: no populated field", path)
}

// removeTree removes an empty group and the groups below it, deepest first:
// rmdir fails with EBUSY on a group that still has child groups.
func removeTree(path string) error {
	var dirs []string
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("removing cgroup %s: %w", path, err)
	}
	for _, dir := range slices.Backward(dirs) {
		if err := os.Remove(dir); err != nil {
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// Create creates an owned group named name in g: Close kills whatever
// runs in it and removes it. For the daemon's runs, whose names the
// daemon picks.
func (g *Group) Create(name string) (*Group, error) {
	path := filepath.Join(g.Path, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", path, err)
	}
	mount := strings.TrimSuffix(g.Path, g.Rel)
	child, err := openGroup(mount, local(filepath.Join(g.Rel, name)), true, path)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return child, nil
}

// Ensure opens the group at rel below the cgroup2 mount, creating it and
// its parents as needed; Close only closes it.
func Ensure(rel string) (*Group, error) {
	mount, err := Mount()
	if err != nil {
		return nil, err
	}
	rel = local(rel)
	path := filepath.Join(mount, rel)
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", path, err)
	}
	return openGroup(mount, rel, false, path)
}

// local is rel ("/a/b", as Group.Rel) as openGroup takes it: "a/b".
func local(rel string) string {
	return strings.TrimPrefix(filepath.Clean("/"+rel), "/")
}

// Sweep kills and removes every group below g (not g itself): the groups a
// daemon that was killed left behind. Best effort: it returns the first
// failure and goes on.
func (g *Group) Sweep() (swept int, err error) {
	entries, rerr := os.ReadDir(g.Path)
	if rerr != nil {
		return 0, fmt.Errorf("sweeping cgroup %s: %w", g.Path, rerr)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if kerr := killAndRemove(filepath.Join(g.Path, e.Name())); kerr != nil {
			err = cmp.Or(err, kerr)
			continue
		}
		swept++
	}
	return swept, err
}

// Adopt moves process pid (all its threads) into the group.
func (g *Group) Adopt(pid int) error {
	if err := os.WriteFile(filepath.Join(g.Path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("moving pid %d into cgroup %s: %w", pid, g.Path, err)
	}
	return nil
}

// Populated reports whether any process runs in the group or below it.
func (g *Group) Populated() (bool, error) { return populated(g.Path) }

// Remove removes an empty group and the groups below it (again, after a
// Close whose removal failed).
func (g *Group) Remove() error { return removeTree(g.Path) }
