package main

// The workloads: this test binary, re-executed under sfwatch run with
// SFWATCH_TEST_WORKLOAD set, runs the one named by its first argument.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sfwatch/sfwatch/internal/testworkload"
)

// workloadEnvVar, when set, makes the test binary run a workload instead
// of the tests: `test.binary NAME ARGS...` under `sfwatch run`.
const workloadEnvVar = "SFWATCH_TEST_WORKLOAD"

var workloads = map[string]func(args []string) error{
	"offsets":        offsetsWorkload,
	"threads":        threadsWorkload,
	"grandchild":     grandchildWorkload,
	"grandchild-mid": grandchildMidWorkload,
	"grandchild-end": grandchildEndWorkload,
	"count-sigterm":  countSigtermWorkload,
	"forkserver":     forkServerWorkload,
	"serve":          serveWorkload,
	"loop":           loopWorkload,
	"restart":        restartWorkload,
	"nonblock":       nonblockWorkload,
	"pm-calls":       pmCallsWorkload,
	"pm-wait-calls":  pmWaitCallsWorkload,
	"escape":         escapeWorkload,
	"escape-child":   escapeChildWorkload,
}

// init keeps a workload's main goroutine on the main thread, locked before
// main runs: its calls then come from tid == pid, which TestRunGrandchild
// asserts. Unlocked, Go may move it, as it did on a slow guest.
func init() {
	if os.Getenv(workloadEnvVar) != "" {
		runtime.LockOSThread()
	}
}

func workloadMain(name string, args []string) int {
	if name == "exit" {
		code, _ := strconv.Atoi(args[0])
		return code
	}
	w, ok := workloads[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no workload %q\n", name)
		return 99
	}
	if err := w(args); err != nil {
		fmt.Fprintf(os.Stderr, "workload %s: %v\n", name, err)
		return 98
	}
	return 0
}

func ptr(v int64) *int64 { return &v }

// offsetsWorkload makes one call of each kind and prints a manifest line
// per call, after a "pid N" and a "uid N" line.
func offsetsWorkload([]string) error {
	fmt.Printf("pid %d\nuid %d\n", os.Getpid(), os.Getuid())
	f, err := testworkload.OpenFiles()
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.LockOSThread()
	out, in := int(f.DevNull.Fd()), int(f.In.Fd())
	calls := []directCall{
		sendfileCall(out, in, nil, 4096),                            // NULL offset: the file position moves
		sendfileCall(out, in, ptr(0), 4096),                         // [0] => [4096]
		sendfileCall(out, in, ptr(testworkload.FileSize-100), 4096), // short: 100 bytes left
		sendfileCall(out, in, ptr(testworkload.FileSize), 4096),     // EOF: 0, [16384] unchanged
		sendfileCall(999, in, nil, 4096),                            // EBADF
		sendfileCall(out, int(f.PipeR.Fd()), ptr(0), 4096),          // ESPIPE
		sendfileCall(int(f.Append.Fd()), in, nil, 4096),             // EINVAL
		sendfileCall(out, in, ptr(0), 0),                            // count 0: returns 0
	}
	f.In.Seek(0, 2)
	calls = append(calls, sendfileCall(out, in, nil, 4096)) // EOF with NULL: 0
	enc := json.NewEncoder(os.Stdout)
	for _, c := range calls {
		if err := enc.Encode(c); err != nil {
			return err
		}
	}
	return nil
}

// threadsWorkload: THREADS threads make N NULL-offset calls each.
func threadsWorkload(args []string) error {
	threads, _ := strconv.Atoi(args[0])
	n, _ := strconv.Atoi(args[1])
	_, err := testworkload.Loop{Threads: threads, N: n, Offsets: testworkload.Null}.Run()
	return err
}

// loopWorkload: THREADS threads make N calls each of 4 KiB to /dev/null,
// alternating NULL and pointer offsets: the benchmark's tight loop.
func loopWorkload(args []string) error {
	threads, _ := strconv.Atoi(args[0])
	n, _ := strconv.Atoi(args[1])
	_, err := testworkload.Loop{Threads: threads, N: n, Offsets: testworkload.Alternate}.Run()
	return err
}

// grandchildWorkload starts a middle process that starts a setsid
// grandchild and exits at once (a double fork); it waits until the
// grandchild has made its calls (READY file), then exits, leaving the
// grandchild running.
func grandchildWorkload(args []string) error {
	ready := args[0]
	fmt.Printf("pid %d\n", os.Getpid())
	if err := selfCommand("grandchild-mid", ready).Run(); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			return nil
		}
	}
	return fmt.Errorf("grandchild never got ready")
}

func grandchildMidWorkload(args []string) error {
	c := selfCommand("grandchild-end", args[0])
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return c.Start() // and exit without waiting: the grandchild is orphaned
}

// grandchildEndWorkload makes 3 calls, writes its pid to READY, and sleeps.
func grandchildEndWorkload(args []string) error {
	f, err := testworkload.OpenFiles()
	if err != nil {
		return err
	}
	defer f.Close()
	for range 3 {
		sendfileCall(int(f.DevNull.Fd()), int(f.In.Fd()), ptr(0), 4096)
	}
	tmp := args[0] + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, args[0]); err != nil {
		return err
	}
	time.Sleep(5 * time.Minute)
	return nil
}

// countSigtermWorkload (READY [SIGNAL]) writes READY once its handler is
// in place, then exits with the number of SIGTERMs (or of SIGNAL, a number)
// received within a second of the first.
func countSigtermWorkload(args []string) error {
	sig := syscall.SIGTERM
	if len(args) > 1 {
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		sig = syscall.Signal(n)
	}
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, sig)
	if err := os.WriteFile(args[0], nil, 0o644); err != nil {
		return err
	}
	<-ch
	n := 1
	for timeout := time.After(time.Second); ; {
		select {
		case <-ch:
			n++
		case <-timeout:
			os.Exit(n)
		}
	}
}

// forkServerWorkload starts N server processes, each on its own loopback
// port serving one file with net/http; it writes their addresses to READY
// and runs until SIGTERM, which it passes on to them.
func forkServerWorkload(args []string) error {
	ready := args[0]
	n, _ := strconv.Atoi(args[1])
	dir, err := os.MkdirTemp("", "sfwatch-forkserver-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	page := make([]byte, 64<<10)
	for i := range page {
		page[i] = byte('a' + i%26)
	}
	if err := os.WriteFile(filepath.Join(dir, "page"), page, 0o644); err != nil {
		return err
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	var addrs []string
	var servers []*exec.Cmd
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lf, _ := ln.(*net.TCPListener).File()
		c := selfCommand("serve", dir)
		c.ExtraFiles = []*os.File{lf}
		if err := c.Start(); err != nil {
			return err
		}
		ln.Close()
		lf.Close()
		servers = append(servers, c)
		addrs = append(addrs, ln.Addr().String())
	}
	data, _ := json.Marshal(addrs)
	if err := os.WriteFile(ready+".tmp", data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(ready+".tmp", ready); err != nil {
		return err
	}
	<-term
	for _, c := range servers {
		c.Process.Signal(syscall.SIGTERM)
		c.Wait()
	}
	return nil
}

// serveWorkload serves DIR with net/http on the listener passed as fd 3.
func serveWorkload(args []string) error {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	go func() {
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		<-term
		os.Exit(0)
	}()
	return http.Serve(ln, http.FileServer(http.Dir(args[0])))
}

// selfCommand re-executes this test binary as another workload.
func selfCommand(name string, args ...string) *exec.Cmd {
	c := exec.Command(os.Args[0], append([]string{name}, args...)...)
	c.Env = append(os.Environ(), workloadEnvVar+"=1")
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	return c
}

// loopCounts are the kernel's totals for a threads or loop workload.
type loopCounts struct {
	calls, bytes, eof, offsetNull, offsetPtr uint64
}

// loopTotals are the exact totals of the threads workload (alternate
// false) or the loop workload (true) of THREADS threads making N calls each
// (testworkload.Loop.Expected).
func loopTotals(threads, n int, alternate bool) loopCounts {
	offsets := testworkload.Null
	if alternate {
		offsets = testworkload.Alternate
	}
	w := testworkload.Loop{Threads: threads, N: n, Offsets: offsets}.Expected()
	return loopCounts{w.Calls, w.Bytes, w.EOF, w.Null, w.Pointer}
}

// restartWorkload makes one sendfile that blocks on a full pipe, has a
// thread-directed signal interrupt it SIGNALS times before any byte moves
// (each an ERESTARTSYS exit, restarted by the kernel: Go's handlers have
// SA_RESTART), then lets it complete by reading the other end. It prints
// the call's manifest line: one call, whatever the interruptions.
func restartWorkload(args []string) error {
	signals, _ := strconv.Atoi(args[0])
	f, err := testworkload.OpenFiles()
	if err != nil {
		return err
	}
	defer f.Close()
	// A pipe, not a socket: before 6.5 a sendfile to a full unix socket
	// does not block (it appends to the reader's last buffer). A full pipe
	// blocks it on every kernel.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	fds := [2]int{p[1], p[0]} // fds[0] is written to, fds[1] read from
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	// Fill the pipe: the call then blocks before moving a byte.
	unix.SetNonblock(fds[0], true)
	chunk := make([]byte, 64<<10)
	for {
		if _, err := unix.Write(fds[0], chunk); err != nil {
			break
		}
	}
	unix.SetNonblock(fds[0], false)

	usr1 := make(chan os.Signal, signals)
	signal.Notify(usr1, syscall.SIGUSR1) // a handler, with SA_RESTART
	tid := make(chan int)
	done := make(chan directCall)
	go func() {
		runtime.LockOSThread()
		tid <- unix.Gettid()
		done <- sendfileCall(fds[0], int(f.In.Fd()), nil, 4096)
	}()
	target := <-tid
	for range signals {
		time.Sleep(20 * time.Millisecond) // let it block again
		if err := unix.Tgkill(os.Getpid(), target, unix.SIGUSR1); err != nil {
			return err
		}
		<-usr1
	}
	time.Sleep(20 * time.Millisecond)
	// Drain the other end until the call completes.
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := unix.Read(fds[1], buf); err != nil {
				return
			}
		}
	}()
	return json.NewEncoder(os.Stdout).Encode(<-done)
}

// nonblockWorkload sends the file with pointer offsets into a non-blocking
// TCP socket on loopback that nobody reads, until the buffers are full:
// calls that move what fits (TCP takes part of a call when that is all
// the room there is: short), then EAGAIN. It prints the manifest.
func nonblockWorkload([]string) error {
	f, err := testworkload.OpenFiles()
	if err != nil {
		return err
	}
	defer f.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	defer conn.Close()
	peer, err := ln.Accept() // never read
	if err != nil {
		return err
	}
	defer peer.Close()
	file, err := conn.(*net.TCPConn).File() // a blocking duplicate
	if err != nil {
		return err
	}
	defer file.Close()
	out := int(file.Fd())
	if err := unix.SetNonblock(out, true); err != nil {
		return err
	}
	runtime.LockOSThread()
	enc := json.NewEncoder(os.Stdout)
	off := int64(0)
	for range 1000 {
		c := sendfileCall(out, int(f.In.Fd()), &off, testworkload.FileSize)
		if err := enc.Encode(c); err != nil {
			return err
		}
		if c.Ret < 0 {
			return nil // EAGAIN: full
		}
		if off == testworkload.FileSize {
			off = 0
		}
	}
	return fmt.Errorf("the socket never filled")
}

// pmCallsWorkload: THREADS N READY [pin]. THREADS threads make N sendfile
// calls each of 4 KiB to /dev/null, alternating NULL and pointer offsets,
// every one a full transfer (a NULL-offset descriptor is rewound with
// lseek before it reaches the end). The workload counts what the calls
// returned, writes the totals (JSON) to READY, then waits for SIGTERM and
// exits 0: metrics can be scraped while sfwatch still runs. With "pin",
// every thread runs on one CPU, so that --sample's per-CPU cycle is one
// cycle and the number of emitted events is exact.
func pmCallsWorkload(args []string) error {
	if len(args) < 3 {
		return errors.New("usage: pm-calls THREADS N READY [pin]")
	}
	threads, _ := strconv.Atoi(args[0])
	n, _ := strconv.Atoi(args[1])
	ready := args[2]
	pin := len(args) > 3 && args[3] == "pin"
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	return pmRunLoop(testworkload.Loop{Threads: threads, N: n, Offsets: testworkload.Alternate, Size: 64 << 10, Full: true, Pin: pin}, ready, term)
}

// pmWaitCallsWorkload: GO N DONE. Waits until the file GO exists, makes N
// pointer-offset sendfile calls of 4 KiB to /dev/null from one thread,
// writes its totals to DONE, then waits for SIGTERM and exits 0.
func pmWaitCallsWorkload(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: pm-wait-calls GO N DONE")
	}
	goFile, done := args[0], args[2]
	n, _ := strconv.Atoi(args[1])
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	for {
		if _, err := os.Stat(goFile); err == nil {
			break
		}
		select {
		case <-term:
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
	runtime.LockOSThread()
	return pmRunLoop(testworkload.Loop{N: n, Offsets: testworkload.Pointer, Full: true}, done, term)
}

// pmRunLoop runs l, writes its totals to path, then waits for SIGTERM (on
// term) and returns nil: metrics can be scraped while sfwatch still runs.
func pmRunLoop(l testworkload.Loop, path string, term <-chan os.Signal) error {
	w, err := l.Run()
	if err != nil {
		return err
	}
	if err := pmWriteFile(path, pmTotals{Totals: w, PID: os.Getpid()}); err != nil {
		return err
	}
	<-term
	return nil
}

// pointerCalls makes n calls of 4096 bytes from offset 0 of a file of
// testworkload.FileSize bytes to /dev/null: n calls, n*4096 bytes.
func pointerCalls(n int) error {
	_, err := testworkload.Loop{N: n, Offsets: testworkload.Pointer, Full: true}.Run()
	return err
}

// escapeWorkload GROUP N: N calls; moves itself into GROUP (outside the
// run's group); N calls; starts escape-child there, which makes N calls
// and stays; prints that child's pid and exits once it has made them.
func escapeWorkload(args []string) error {
	group := args[0]
	n, _ := strconv.Atoi(args[1])
	if err := pointerCalls(n); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(group, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("leaving the group: %w", err)
	}
	if err := pointerCalls(n); err != nil {
		return err
	}
	cmd := exec.Command(os.Args[0], "escape-child", args[1])
	cmd.Env = os.Environ()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		return fmt.Errorf("escape-child said %q: %v", line, err)
	}
	fmt.Println(cmd.Process.Pid)
	return nil // the child stays: the run's cleanup must end it
}

// escapeChildWorkload N: N calls, "ready", then waits to be killed.
func escapeChildWorkload(args []string) error {
	n, _ := strconv.Atoi(args[0])
	if err := pointerCalls(n); err != nil {
		return err
	}
	fmt.Println("ready")
	time.Sleep(time.Minute)
	return errors.New("still alive after a minute: nobody killed the run's leftovers")
}
