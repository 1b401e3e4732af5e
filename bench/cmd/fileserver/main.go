// Command fileserver is the benchmark's Go file server: net/http's
// FileServer over one directory, which answers with sendfile(2) for every
// file it serves (the first 512 bytes go through a buffer for content-type
// sniffing, the rest through sendfile).
//
//	fileserver -addr 127.0.0.1:8080 -root DIR [-pidfile FILE]
//
// SIGTERM or SIGINT closes the listener and every connection, then exits 0.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	root := flag.String("root", ".", "directory to serve")
	pidfile := flag.String("pidfile", "", "write the process id here once listening")
	stats := flag.String("stats", "", "at exit, write the process's own CPU time here as JSON {\"cpu_ns\":N}")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fileserver:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(*root))}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sigs
		srv.Close()
	}()
	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "fileserver:", err)
			os.Exit(1)
		}
	}
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "fileserver:", err)
		os.Exit(1)
	}
	if *stats != "" {
		// Own CPU, so that the tracer that started us can subtract it
		// from what wait4 reports for itself and its children.
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		line := fmt.Sprintf("{\"cpu_ns\":%d}\n", ru.Utime.Nano()+ru.Stime.Nano())
		if err := os.WriteFile(*stats, []byte(line), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "fileserver:", err)
			os.Exit(1)
		}
	}
}
