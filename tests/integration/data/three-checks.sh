#!/bin/sh
# A small script group: three real checks of the guest, as KTAP on stdout.
echo "KTAP version 1"
echo "1..3"
[ "$(cat /sys/devices/system/node/online)" = "0-1" ] && echo "ok 1 two_nodes_online" || echo "not ok 1 two_nodes_online"
grep -q pgmigrate_success /proc/vmstat && echo "ok 2 migration_counters" || echo "not ok 2 migration_counters"
[ "$(id -u)" = 0 ] && echo "ok 3 runs_as_root" || echo "not ok 3 runs_as_root"
