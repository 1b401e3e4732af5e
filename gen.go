// Package sfwatch proves, with eBPF and without ptrace, what a program does
// with sendfile(2).
package sfwatch

// The BPF objects are generated into internal/loader and committed, so that
// go build and go install need no clang. `make generate` runs this.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -go-package loader -output-dir internal/loader -cc clang -cflags "-O2 -g -Wall -Werror -nostdinc -Ibpf/include" -target bpfel -type event -type counter -type event_flag -type member_flag -type member Sfwatch bpf/sfwatch.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -go-package loader -output-dir internal/loader -cc clang -cflags "-O2 -g -Wall -Werror -nostdinc -Ibpf/include" -target bpfel -type group_event -type row_slot -type daemon_counter -type group_event_kind -type watch Daemon bpf/daemon.c
