#!/bin/sh
# A writer stuck in the kernel on the default kernel: the scratch ext4 is frozen
# (FIFREEZE), so creating a file on it sleeps uninterruptibly in sb_start_write()
# until a thaw that never comes; the hung-task detector reports it.
echo "KTAP version 1"
echo "1..3"
echo "ok 1 before_freeze"
echo "# Subtest: write_to_frozen_fs"
fsfreeze --freeze /mnt/scratch || { echo "not ok 2 write_to_frozen_fs # ERROR fsfreeze failed"; exit 1; }
echo data > /mnt/scratch/never-written
echo "ok 2 write_to_frozen_fs"
echo "ok 3 after_write"
