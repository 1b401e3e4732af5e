#!/bin/busybox sh
# /init of the guest run.sh boots: runs each variant ROUNDS times per
# thread count and prints RECEXP lines, then powers off.
/bin/busybox --install -s /bin
export PATH=/bin HOME=/ TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mkdir -p /sys/fs/cgroup /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
echo "RECEXP kernel=$(uname -r) $(uname -v)"
echo "RECEXP pmus=$(ls /sys/bus/event_source/devices | tr '\n' ' ')"
echo "RECEXP preempt=$(cat /sys/kernel/debug/sched/preempt 2>&1)"
for arg in $(cat /proc/cmdline); do case $arg in recexp.rounds=*) ROUNDS=${arg#*=};; recexp.threads=*) THREADS=${arg#*=};; recexp.variants=*) VARIANTS=${arg#*=};; esac; done
ROUNDS=${ROUNDS:-3} THREADS=${THREADS:-2} VARIANTS=${VARIANTS:-sfwatch,tp,pd,empty,kp,raw}
for t in $(echo $THREADS | tr , ' '); do
for r in $(seq $ROUNDS); do
	for v in $(echo $VARIANTS | tr , ' '); do
		echo "RECEXP run variant=$v round=$r threads=$t"
		if [ $v = sfwatch ]; then
			timeout -s KILL 200 /bin/recmiss -- /bin/sfwatch run --quiet -- /bin/sendfileloop -n 100000 -threads $t 2>&1 | sed "s/^/RECEXP t=$t r=$r /"
		else
			timeout -s KILL 200 /bin/recexp -variant $v -- /bin/sendfileloop -n 100000 -threads $t 2>&1 | sed "s/^/RECEXP t=$t r=$r /"
		fi
	done
done
done
echo "RECEXP done"
poweroff -f
