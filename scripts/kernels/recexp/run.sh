#!/bin/sh
# run.sh KERNEL [ROUNDS THREADS VARIANTS]: boots a kernel that make kernels
# has already fetched (a version prefix: 7.3) in qemu, as kernels.sh does,
# and runs recexp's variants there (guest-init.sh); the console goes to
# stdout. Defaults: 3 rounds, 2 threads, sfwatch,tp,pd,empty,kp,raw.
# Experiment of issue 14; docs/kernels.md.
set -eu
cache=${KERNELS_CACHE:-/var/cache/sfwatch-kernels}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
vmlinuz=$(find "$cache"/kernels/linux-image-"$1"[.-]* -name 'vmlinuz*' -type f 2>/dev/null | sort -V | tail -1)
[ -n "$vmlinuz" ] || { echo "run.sh: no kernel $1 in $cache/kernels (make kernels KERNELS=$1 fetches it)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/bin "$root"/proc "$root"/sys "$root"/dev "$root"/tmp "$root"/etc
chmod 755 "$work" "$root"
cp "$(command -v busybox)" "$root/bin/busybox"
install -m 755 "$here/guest-init.sh" "$root/init"
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
(cd "$here" && go generate -tags recexp .)
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -tags recexp -o "$root/bin/" ./cmd/sfwatch ./scripts/kernels/recmiss ./bench/cmd/sendfileloop ./scripts/kernels/recexp)
(cd "$root" && find . | cpio -o -H newc --quiet) >"$work/initramfs.cpio"
timeout --foreground -k 10 1800 qemu-system-x86_64 -accel tcg,thread=single -cpu max -smp 2 -m 1G \
	-nographic -no-reboot -nic none -kernel "$vmlinuz" -initrd "$work/initramfs.cpio" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 recexp.rounds=${2:-3} recexp.threads=${3:-2} recexp.variants=${4:-sfwatch,tp,pd,empty,kp,raw}" </dev/null |
	tr -d '\r' | sed -n 's/.*RECEXP/RECEXP/p'
