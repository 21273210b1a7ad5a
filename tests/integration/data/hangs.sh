#!/bin/sh
# One test passes, the second never finishes.
echo "KTAP version 1"
echo "1..3"
echo "ok 1 before_hang"
sleep 100000
echo "ok 2 hangs_forever"
echo "ok 3 after_hang"
