#!/bin/sh
# Boot checks, as KTAP v1 on the console: the topology, swap and scratch disk
# the spec asked for are the ones the kernel sees. Reads /etc/harness/expect.
. /etc/harness/expect
n=0
result() {  # result OK|FAIL name [diagnostic]
    n=$((n + 1))
    [ -n "$3" ] && echo "# $3"
    if [ "$1" = OK ]; then echo "ok $n $2"; else echo "not ok $n $2"; fi
}
skip() { n=$((n + 1)); echo "ok $n $1 # SKIP $2"; }

echo "KTAP version 1"
echo "# Subtest: boot"
echo "1..$((2 * NODES + 3))"

online=$(cat /sys/devices/system/node/online 2>/dev/null)
found=$(ls -d /sys/devices/system/node/node[0-9]* 2>/dev/null | wc -l)
if [ "$found" -eq "$NODES" ]; then s=OK; else s=FAIL; fi
result $s numa_nodes_online "expected $NODES nodes, found $found (online: ${online:-none})"

i=0
while [ $i -lt "$NODES" ]; do
    eval want=\$NODE${i}_MEM_MIB
    eval want_cpus=\$NODE${i}_CPUS
    eval reserved=\$NODE${i}_RESERVED_MIB
    kb=$(awk '/MemTotal/ {print $4}' /sys/devices/system/node/node$i/meminfo 2>/dev/null)
    got=$(( ${kb:-0} / 1024 ))
    low=$(( want - want * MEM_TOLERANCE_PCT / 100 - ${reserved:-0} ))
    if [ "$got" -ge "$low" ] && [ "$got" -le "$want" ]; then s=OK; else s=FAIL; fi
    result $s node${i}_memory "node $i: expected ${low}..${want} MiB, found $got MiB"
    cpus=$(cat /sys/devices/system/node/node$i/cpulist 2>/dev/null)
    if [ "$cpus" = "$want_cpus" ]; then s=OK; else s=FAIL; fi
    result $s node${i}_cpus "node $i: expected cpus $want_cpus, found ${cpus:-none}"
    i=$((i + 1))
done

if [ "$SWAP_MIB" -eq 0 ]; then
    skip swap_active "no swap disk in the spec"
else
    kb=$(awk -v d="$SWAP_DEV" '$1 == d {print $3}' /proc/swaps)
    got=$(( ${kb:-0} / 1024 ))
    # mkswap keeps one page for its header: allow 1 MiB
    if [ "$got" -ge $((SWAP_MIB - 1)) ] && [ "$got" -le "$SWAP_MIB" ]; then s=OK; else s=FAIL; fi
    result $s swap_active "swap on $SWAP_DEV: expected $SWAP_MIB MiB, found $got MiB"
fi

# The ext4 scratch disk of the file-page cases: attached and mounted by init.
fs=$(awk -v d="$SCRATCH_DEV" -v m="$SCRATCH_MOUNT" '$1 == d && $2 == m {print $3}' /proc/mounts)
if [ -b "$SCRATCH_DEV" ]; then attached="block device"; else attached="no block device"; fi
if [ "$fs" = ext4 ]; then s=OK; else s=FAIL; fi
result $s scratch_mounted "scratch disk $SCRATCH_DEV ($attached) on $SCRATCH_MOUNT: expected ext4, found ${fs:-not mounted}"
