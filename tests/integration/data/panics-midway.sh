#!/bin/sh
# Two tests pass, the third panics the kernel, the fourth can never run.
echo "KTAP version 1"
echo "1..4"
echo "ok 1 before_one"
echo "ok 2 before_two"
echo "# Subtest: trigger_panic"
sleep 1
echo c > /proc/sysrq-trigger
echo "ok 3 trigger_panic"
echo "ok 4 after_panic"
