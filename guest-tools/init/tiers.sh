#!/bin/sh
# A lower-tier node's memory is a label-less nvdimm (one raw namespace per region).
# Turn each into system RAM as ndctl and daxctl would (the guest has busybox only):
# `ndctl create-namespace -f -e NS -m devdax` (a dax seed claims the namespace) and
# `daxctl reconfigure-device -m system-ram` (device_dax -> kmem), then online the
# new memory blocks movable. dax/kmem registers its memory in a lower memory tier.
nd=/sys/bus/nd
for ns in $nd/devices/namespace*.*; do
    [ -e "$ns/size" ] && [ "$(cat "$ns/size")" != 0 ] || continue
    name=${ns##*/}
    region=$(basename "$(dirname "$(readlink -f "$ns")")")
    [ -e "$ns/driver" ] && echo "$name" > "$ns/driver/unbind"
    dax=$(cat "$nd/devices/$region/dax_seed")
    cat /proc/sys/kernel/random/uuid > "$nd/devices/$dax/uuid"
    echo pmem > "$nd/devices/$dax/mode"
    echo "$name" > "$nd/devices/$dax/namespace"
    echo "$dax" > "$nd/drivers_probe"
done
for dev in /sys/bus/dax/devices/dax*; do
    [ -e "$dev" ] || continue
    echo "${dev##*/}" > /sys/bus/dax/drivers/device_dax/unbind
    echo "${dev##*/}" > /sys/bus/dax/drivers/kmem/new_id
done
for b in /sys/devices/system/memory/memory*; do
    [ "$(cat "$b/state")" = offline ] && echo online_movable > "$b/state"
done
