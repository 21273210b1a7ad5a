#!/bin/sh
# Re-capture the real crash logs in this folder from the default 6.1 kernel.
# Run from the repository root: sh tests/unit/data/crashes/capture.sh
set -e
here=tests/unit/data/crashes
build=$(python3 -m harness.cli build --out /tmp/crash-capture 2>/dev/null | sed 's|/arch/x86/boot/bzImage$||')
work=$(mktemp -d)
cp $here/crashmod/* "$work"
make -s -C "$build" M="$work" modules
for mode in bug warn null hang; do
    python3 -m harness.cli boot --push "$work/crashmod.ko" --out "/tmp/crash-capture/$mode" --exec \
        "echo 2 > /proc/sys/kernel/hung_task_timeout_secs; insmod /tmp/harness/crashmod.ko mode=$mode; sleep 6" || true
    cp "/tmp/crash-capture/$mode/console.log" "$here/$mode.log"
done
python3 -m harness.cli boot --out /tmp/crash-capture/panic --exec 'echo c > /proc/sysrq-trigger' || true
cp /tmp/crash-capture/panic/console.log "$here/panic.log"
rm -rf "$work"
