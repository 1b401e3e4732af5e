// Package floor holds the benchmark's empty tracepoint programs (floor.c),
// compiled by bpf2go. It is part of the benchmark only, never of sfwatch.
package floor

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -go-package floor -cc clang -cflags "-O2 -g -Wall -Werror -nostdinc -I../../bpf/include" -target bpfel Floor floor.c
