#!/bin/bash
# kernels.sh [KERNEL...]: boots each Debian kernel in qemu (TCG) and runs
# sfwatch's selftest, doctor and privileged tests inside; prints a table and
# exits 1 when a kernel fails. KERNEL is a version prefix (5.10, 6.1, 6.12,
# 7.2), "newest" (the highest packaged), or a linux-image-* package name.
# Default: 6.1 6.12 newest. docs/kernels.md says more.
#
# Environment: KERNELS_CACHE (default /var/cache/sfwatch-kernels: apt state,
# .debs, extracted kernels, logs), KERNELS_TIMEOUT (seconds per test binary
# inside the guest, default 900), KERNELS_RUN (a -test.run pattern),
# KERNELS_PARALLEL (-test.parallel: 1 keeps one test's BPF map reads from
# making another's kprobes skip on 7.2+, see docs/kernels.md),
# KERNELS_RETRY_SKIPS (1: run once more the tests that failed while the
# kernel skipped a program, see init.sh retry_skipped).
set -euo pipefail

cache=${KERNELS_CACHE:-/var/cache/sfwatch-kernels}
test_timeout=${KERNELS_TIMEOUT:-900}
repo=$(cd "$(dirname "$0")/../.." && pwd)
# Packages with privileged tests, built static for the guest.
test_pkgs=(. ./cmd/sfwatch ./internal/cgroup ./internal/child ./internal/counters ./internal/daemon ./internal/loader ./internal/ringreader ./internal/server ./internal/session)
[ $# -gt 0 ] || set -- 6.1 6.12 newest

die() { echo "kernels: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (apt state in $cache; the guest runs as root anyway)"
for tool in qemu-system-x86_64 busybox cpio apt-get dpkg-deb gcc go timeout; do
	command -v "$tool" >/dev/null || die "needs $tool (make deps installs it)"
done

# A private apt: its own sources, lists and archives under $cache, reading
# this machine's Debian mirror for every suite. Nothing is installed.
apt_dir=$cache/apt
export APT_CONFIG=$apt_dir/apt.conf
setup_apt() {
	local mirror
	mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
		awk '{print $2; exit}' || true)
	mirror=${mirror:-http://deb.debian.org/debian}
	mkdir -p "$apt_dir"/{lists/partial,archives/partial,conf.d,preferences.d}
	: >"$apt_dir/status"
	local keys=/usr/share/keyrings/debian-archive-keyring.gpg
	local suites="bullseye bookworm trixie trixie-backports sid" s
	for s in $suites; do echo "deb [signed-by=$keys] ${mirror%/} $s main"; done >"$apt_dir/sources.list.new"
	cat >"$apt_dir/apt.conf" <<-EOF
		Dir::Etc::SourceList "$apt_dir/sources.list";
		Dir::Etc::SourceParts "$apt_dir/conf.d";
		Dir::Etc::Parts "$apt_dir/conf.d";
		Dir::Etc::Preferences "$apt_dir/preferences";
		Dir::Etc::PreferencesParts "$apt_dir/preferences.d";
		Dir::State "$apt_dir";
		Dir::State::Lists "$apt_dir/lists";
		Dir::State::status "$apt_dir/status";
		Dir::Cache "$apt_dir";
		Dir::Cache::Archives "$apt_dir/archives";
		APT::Architecture "amd64";
		APT::Architectures { "amd64"; };
		Acquire::Languages "none";
		// Downloads land in root-owned cache directories.
		APT::Sandbox::User "root";
		// A mirror snapshot's sid Release is past its Valid-Until.
		Acquire::Check-Valid-Until "false";
	EOF
	# Lists are refreshed once a day, or when the sources changed.
	if ! cmp -s "$apt_dir/sources.list.new" "$apt_dir/sources.list" ||
		[ -z "$(find "$apt_dir/lists" -name '*_Packages' -mmin -1440 2>/dev/null)" ]; then
		mv "$apt_dir/sources.list.new" "$apt_dir/sources.list"
		echo "kernels: apt-get update ($mirror: $suites)" >&2
		apt-get -qq update >&2 || die "apt-get update failed"
	else
		rm "$apt_dir/sources.list.new"
	fi
}

# resolve SPEC: the linux-image package it names.
resolve() {
	local spec=$1 names
	names=$(apt-cache pkgnames linux-image- | grep -E '^linux-image-[0-9][^ ]*-cloud-amd64$' | sort -V)
	case $spec in
	newest) echo "$names" | tail -1 ;;
	linux-image-*) echo "$names" | grep -Fx "$spec" ;;
	*) echo "$names" | grep -E "^linux-image-${spec//./\\.}[.-]" | tail -1 ;;
	esac
}

# fetch PKG: prints the path of its vmlinuz, downloading and extracting the
# package (and, from 6.19 on, the linux-binary-* that holds the image) once.
# Prints nothing when there is no image.
fetch() {
	local pkg=$1 dir=$cache/kernels/$1 p
	if [ ! -d "$dir" ]; then
		rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" "$cache/debs"
		for p in "$pkg" "linux-binary-${pkg#linux-image-}"; do
			[ "$p" = "$pkg" ] || apt-cache show "$p" >/dev/null 2>&1 || continue
			(cd "$cache/debs" && ls "${p}"_*.deb >/dev/null 2>&1 || apt-get -qq download "$p") >&2 ||
				die "apt-get download $p failed"
			dpkg-deb -x "$(ls "$cache/debs/${p}"_*.deb | head -1)" "$dir.tmp"
		done
		mv "$dir.tmp" "$dir"
	fi
	# boot/vmlinuz-VERSION until 6.18; usr/lib/modules/VERSION/vmlinuz after.
	find "$dir/boot" "$dir/usr/lib/modules" -name 'vmlinuz*' -type f 2>/dev/null | head -1 || true
}

# build DIR: the initramfs tree, then DIR/initramfs.cpio.
build() {
	local root=$1/root pkg name
	rm -rf "$root" && mkdir -p "$root"/{bin,tests,prebuilt,proc,sys,dev,tmp,etc,src}
	chmod 755 "$1" "$root" # mktemp's 0700 would keep nobody out of / in the guest
	cp "$(command -v busybox)" "$root/bin/busybox"
	install -m 755 "$repo/scripts/kernels/init.sh" "$root/init"
	# The tests run commands as nobody (--user, Spec.User).
	printf '%s\n' 'root:x:0:0:root:/:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >"$root/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
	(
		cd "$repo"
		export CGO_ENABLED=0
		go build -trimpath -o "$root/bin/sfwatch" ./cmd/sfwatch
		cp "$root/bin/sfwatch" "$root/prebuilt/sfwatch"
		go build -trimpath -o "$root/bin/" ./scripts/kernels/recmiss ./bench/cmd/sendfileloop
		for pkg in "${test_pkgs[@]}"; do
			name=${pkg#./}
			[ "$pkg" = . ] && name=root
			go test -c -o "$root/tests/${name//\//+}.test" "$pkg"
			mkdir -p "$root/src/$pkg"
		done
		# The C test programs, static, by the test binary's own recipe.
		cd cmd/sfwatch && SFWATCH_TEST_PREBUILD=$root/prebuilt "$root/tests/cmd+sfwatch.test"
	) || die "building the guest's binaries failed"
	(cd "$root" && find . | cpio -o -H newc --quiet) >"$1/initramfs.cpio"
}

# boot VMLINUZ LOG: runs the guest, bounded; returns qemu's status.
boot() {
	# Every test binary's bound, plus boot and the selftest and doctor.
	local bound=$((${#test_pkgs[@]} * (test_timeout + 90) + 600))
	# --foreground: qemu stays in our process group, so a Ctrl-C ends it too.
	timeout --foreground -k 10 "$bound" qemu-system-x86_64 -accel tcg,thread=single -cpu max -smp 2 -m 1G \
		-nographic -no-reboot -nic none -kernel "$1" -initrd "$work/initramfs.cpio" \
		-append "console=ttyS0 quiet loglevel=3 panic=-1 sfwatch.timeout=$test_timeout ${KERNELS_RUN:+sfwatch.run=$KERNELS_RUN} ${KERNELS_PARALLEL:+sfwatch.parallel=$KERNELS_PARALLEL} ${KERNELS_RETRY_SKIPS:+sfwatch.retryskips=$KERNELS_RETRY_SKIPS}" \
		</dev/null >"$2" 2>&1
}

# In a function, read whole before it runs: editing this file while it
# runs (an hour, for many kernels) does not break the run.
main() {
	setup_apt
	mkdir -p "$cache/logs"
	work=$(mktemp -d "$cache/work.XXXXXX") # the initramfs, ~100 MB: one per run
	trap 'rm -rf "$work"' EXIT
	echo "kernels: building sfwatch and the test binaries" >&2
	build "$work"

	declare -a rows
	failed=0 notrun=
	for spec in "$@"; do
		pkg=$(resolve "$spec") || true
		[ -n "$pkg" ] || die "no linux-image-*-cloud-amd64 package matches $spec"
		version=$(apt-cache show --no-all-versions "$pkg" | awk '/^Version:/ {print $2; exit}')
		vmlinuz=$(fetch "$pkg")
		[ -n "$vmlinuz" ] || die "$pkg: no boot/vmlinuz-* in it or its linux-binary-* package"
		log=$cache/logs/${pkg#linux-image-}.log
		echo "kernels: booting $pkg ($version), log in $log" >&2
		t0=$(date +%s)
		qrc=0
		boot "$vmlinuz" "$log" || qrc=$?
		secs=$(($(date +%s) - t0))
		tr -d '\r' <"$log" >"$log.tmp" && mv "$log.tmp" "$log"
		# A step retried after a skipped program run (init.sh retry_skipped)
		# counts its passes; its failures are the retry step's to count.
		read -r pass fail skip < <(awk '/^SFWATCH-KERNELS retried=/ { split($2, kv, "="); retried[kv[2]] = 1 }
		/^SFWATCH-KERNELS step=/ {
			for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
			n++; name[n] = v["step"]; P[n] = v["pass"]; F[n] = v["fail"]; S[n] = v["skip"]; RC[n] = v["rc"]
		} END {
			for (i = 1; i <= n; i++) {
				p += P[i]; s += S[i]
				if (name[i] in retried) continue
				f += F[i]
				if (RC[i] != 0 && F[i] == 0) f++ # a step that failed without a test failing
			}
			print p + 0, f + 0, s + 0
		}' "$log")
		result=pass
		grep -aq '^SFWATCH-KERNELS done' "$log" || { result="FAIL (no result: qemu exit $qrc)"; }
		[ "$fail" = 0 ] || result=FAIL
		[ "$result" = pass ] || failed=1
		notrun=$(grep -a '^SFWATCH-KERNELS notrun=' "$log" | head -1 | cut -d= -f2- || true)
		skips=$(grep -a '^SFWATCH-KERNELS skipped=' "$log" | awk '{print $3}' | sort -u | paste -sd, - || true)
		retries=$(grep -a '^SFWATCH-KERNELS retried=' "$log" | awk '{sub(/^retried=/, "", $2); print $2 " " $3}' | tr '|' ',' | paste -sd';' - || true)
		rows+=("$(printf '%-28s %-18s %5s %5s %5s %6ss  %s%s%s' "${pkg#linux-image-}" "$version" "$pass" "$fail" "$skip" "$secs" "$result" "${skips:+ (skipped: $skips)}" "${retries:+ (retried after a skipped program run: $retries)}")")
		grep -a '^SFWATCH-KERNELS failed=' "$log" | sed "s/^SFWATCH-KERNELS failed=/  ${pkg#linux-image-}: /" >&2 || true
	done

	printf '%-28s %-18s %5s %5s %5s %7s  %s\n' KERNEL PACKAGE PASS FAIL SKIP TIME RESULT
	printf '%s\n' "${rows[@]}"
	[ -z "$notrun" ] || echo "not run in the guests (bounds that emulation cannot meet, init.sh says which): $notrun"
	exit $failed
}
main "$@"
exit
