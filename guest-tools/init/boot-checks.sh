#!/bin/sh
# Boot checks, as KTAP v1 on the console: the topology, swap and scratch disk
# the spec asked for are the ones the kernel sees. Reads /etc/harness/expect.
# In two parts, each as soon as it can be known (init runs them in turn):
#   boot-checks.sh topology   the plan, then the nodes (before the disks are set up)
#   boot-checks.sh disks      swap and the scratch disk, numbered on from the first part
. /etc/harness/expect
COUNT=/run/boot-checks.done  # results the first part printed
n=0
result() {  # result OK|FAIL name [diagnostic]
    n=$((n + 1))
    [ -n "$3" ] && echo "# $3"
    if [ "$1" = OK ]; then echo "ok $n $2"; else echo "not ok $n $2"; fi
}
skip() { n=$((n + 1)); echo "ok $n $1 # SKIP $2"; }

# in_list N LIST: is N in a kernel node list such as "0-1,3"?
in_list() {
    for r in $(echo "$2" | tr ',' ' '); do
        [ "$1" -ge "${r%-*}" ] && [ "$1" -le "${r#*-}" ] && return 0
    done
    return 1
}

# swap and the scratch disk, set up by init after the first part
disk_checks() {
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
}

if [ "$1" = disks ]; then
    n=$(cat $COUNT)
    disk_checks
    exit 0
fi

# The topology's own promises (a memoryless node, a CPU-less node, a distance row):
# one result each, only for the nodes and specs that make them.
topology=0
i=0
while [ $i -lt "$NODES" ]; do
    eval mem=\$NODE${i}_MEM_MIB cpus=\$NODE${i}_CPUS distance=\$NODE${i}_DISTANCE
    [ "$mem" -eq 0 ] && topology=$((topology + 1))
    [ -z "$cpus" ] && topology=$((topology + 1))
    [ -n "$distance" ] && topology=$((topology + 1))
    eval hotplug=\$NODE${i}_HOTPLUG_MIB hmat=\$NODE${i}_HMAT
    [ "$hotplug" -gt 0 ] && topology=$((topology + 1))
    [ -n "$hmat" ] && topology=$((topology + 1))
    i=$((i + 1))
done
[ "$MOVABLE_MIB" -gt 0 ] && topology=$((topology + 1))
for i in $LOWER_TIER_NODES; do topology=$((topology + 1)); done
# tier_of N: the memory tier holding node N (its number; a lower tier has a larger one), or -1
tier_of() {
    for t in /sys/devices/virtual/memory_tiering/memory_tier*; do
        in_list "$1" "$(cat "$t/nodelist" 2>/dev/null)" && { echo "${t##*memory_tier}"; return; }
    done
    echo -1
}

echo "KTAP version 1"
echo "# Subtest: boot"
echo "1..$((2 * NODES + 3 + topology))"

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
    node_lists="online $online, has_memory $(cat /sys/devices/system/node/has_memory), has_cpu $(cat /sys/devices/system/node/has_cpu)"
    if [ "$want" -eq 0 ]; then
        if in_list $i "$online" && ! in_list $i "$(cat /sys/devices/system/node/has_memory)"; then s=OK; else s=FAIL; fi
        result $s node${i}_memoryless "node $i: expected online without memory ($node_lists)"
    fi
    if [ -z "$want_cpus" ]; then
        if in_list $i "$online" && ! in_list $i "$(cat /sys/devices/system/node/has_cpu)"; then s=OK; else s=FAIL; fi
        result $s node${i}_cpuless "node $i: expected online without CPUs ($node_lists)"
    fi
    eval want_distance=\$NODE${i}_DISTANCE
    if [ -n "$want_distance" ]; then
        distance=$(cat /sys/devices/system/node/node$i/distance 2>/dev/null)
        if [ "$distance" = "$want_distance" ]; then s=OK; else s=FAIL; fi
        result $s node${i}_distances "node $i: expected distances $want_distance, found ${distance:-none}"
    fi
    eval want_hotplug=\$NODE${i}_HOTPLUG_MIB
    if [ "$want_hotplug" -gt 0 ]; then
        # its DIMMs: online memory blocks that can only be Movable (removable)
        bs=$(( $(printf '%d' 0x$(cat /sys/devices/system/memory/block_size_bytes)) / 1048576 ))
        movable=0
        for b in /sys/devices/system/node/node$i/memory[0-9]*; do
            [ "$(cat $b/state 2>/dev/null)" = online ] && [ "$(cat $b/valid_zones 2>/dev/null)" = Movable ] &&
                movable=$((movable + bs))
        done
        if [ "$movable" -ge "$want_hotplug" ]; then s=OK; else s=FAIL; fi
        result $s node${i}_removable "node $i: expected >= $want_hotplug MiB in online Movable blocks, found $movable MiB"
    fi
    eval want_hmat=\$NODE${i}_HMAT
    if [ -n "$want_hmat" ]; then
        # ACPI HMAT reached the kernel: the best initiator's latency (ns) and bandwidth (MB/s) to this node
        a=/sys/devices/system/node/node$i/access0/initiators
        hmat="$(cat $a/read_latency 2>/dev/null) $(cat $a/read_bandwidth 2>/dev/null)"
        if [ "$hmat" = "$want_hmat" ]; then s=OK; else s=FAIL; fi
        result $s node${i}_hmat "node $i: expected HMAT read latency and bandwidth $want_hmat, found $hmat"
    fi
    i=$((i + 1))
done

# kernel_at_least MAJOR MINOR
kernel_at_least() {
    v=$(uname -r) major=${v%%.*} rest=${v#*.}
    minor=${rest%%[!0-9]*}
    [ "$major" -gt "$1" ] || { [ "$major" -eq "$1" ] && [ "$minor" -ge "$2" ]; }
}
for i in $LOWER_TIER_NODES; do
    if [ "$TIERS" = hmat ] && ! kernel_at_least 6 10; then
        skip node${i}_lower_tier "needs: a kernel that tiers CPU-less nodes by ACPI HMAT (6.10 or later; this is $(uname -r))"
        continue
    fi
    top=$(tier_of 0) tier=$(tier_of $i)
    if [ "$tier" -gt "$top" ] && [ "$top" -ge 0 ]; then s=OK; else s=FAIL; fi
    result $s node${i}_lower_tier "node $i: expected a lower memory tier than node 0's (memory_tier$top), found memory_tier$tier"
done

if [ "$MOVABLE_MIB" -gt 0 ]; then
    got=$(awk '/^Node/ {m = ($4 == "Movable")} m && $1 == "present" {p += $2} END {print int(p * 4 / 1024)}' \
        /proc/zoneinfo)
    low=$(( MOVABLE_MIB - MOVABLE_MIB * MEM_TOLERANCE_PCT / 100 ))
    if [ "$got" -ge "$low" ] && [ "$got" -le $((MOVABLE_MIB + 128)) ]; then s=OK; else s=FAIL; fi
    result $s movable_memory "ZONE_MOVABLE: expected ${low}..$((MOVABLE_MIB + 128)) MiB present, found $got MiB"
fi

echo $n > $COUNT
