#!/bin/bash
# 91-bench-coldstart: multipath-tools and multipathd-rs on the same scsi_debug topology (2 hosts
# x 256 LUNs = 512 paths), alternating which tool goes first in each repetition:
# - cold_start_256: daemon start to every map in `dmsetup ls --target multipath` with all its paths
#   in its table;
# - idle_cpu: then, with every map up, the daemon's own CPU (utime + stime of all its threads,
#   /proc/PID/stat) over a fixed window of $BENCH_IDLE_WINDOW s, in CPU seconds per second;
#   udevd and kernel workers are not in it;
# - idle_cpu_guest: the whole guest's non-idle CPU (/proc/stat) over the same window, which
#   counts udevd, kernel workers and the SCSI commands the checkers send, in CPU seconds per
#   second of the guest's 2 CPUs (2.0 = both busy).
# Repetitions: $BENCH_REPS_COLDSTART (the bench sets it; 512 disks make everything slow under
# emulation). Writes results.json for `cargo run --release -p bench` (never asserts times).
# lab-udevd: yes
# lab-timeout: 1800
set -u
. "$LAB_LIB"
# shellcheck source=../../bench/lab-bench.sh
. "$LAB_WS/tests/bench/lab-bench.sh"

HOSTS=2 LUNS=256 TMO=600
BENCH_REPS=${BENCH_REPS_COLDSTART:-$BENCH_REPS}
BENCH_IDLE_WINDOW=${BENCH_IDLE_WINDOW:-20}
BENCH_POLL=0.2 # dmsetup on 256 maps every 50 ms would take CPU from the daemons measured
t0=$(bench_now)
# Not lab_scsi_debug: its wait reads every disk's model with a few processes per disk at every
# poll, minutes with 512 disks under emulation. One `ls` counts them here.
grep -q '^scsi_dh_alua ' /proc/modules || lab_fail "scsi_dh_alua must be loaded before scsi_debug"
lab_run modprobe scsi_debug add_host="$HOSTS" num_tgts=1 max_luns="$LUNS" vpd_use_hostno=0 \
  dev_size_mb=8 || lab_fail "modprobe scsi_debug failed"
lab_wait "$((HOSTS * LUNS)) scsi_debug disks" 900 \
  sh -c "[ \$(ls /sys/class/scsi_disk | wc -l) -ge $((HOSTS * LUNS)) ]"
lab_note "setup: $((HOSTS * LUNS)) disks in $(bench_since "$t0") s"
lab_settle 900
lab_note "setup: $((HOSTS * LUNS)) disks ready and udev settled in $(bench_since "$t0") s"
bench_clean_state

for rep in $(seq "$BENCH_REPS"); do
  if ((rep % 2)); then order="multipath-tools multipathd-rs"; else order="multipathd-rs multipath-tools"; fi
  for tool in $order; do
    [ "$(bench_maps)" = 0 ] || lab_dm_remove_all
    t0=$(bench_now)
    bench_start "$tool"
    if bench_wait_maps "$LUNS" "$TMO" $((LUNS * HOSTS)); then
      bench_record cold_start_256 "$tool" "$rep" "$(bench_since "$t0")"
      # The maps' own uevents are udevd's work after the start, not idle time.
      lab_settle 300
      bench_idle_cpu "$tool" "$rep" "$BENCH_IDLE_WINDOW"
    else
      bench_record cold_start_256 "$tool" "$rep" "" "$BENCH_ERR"
      bench_record idle_cpu "$tool" "$rep" "" "no maps: $BENCH_ERR"
      bench_record idle_cpu_guest "$tool" "$rep" "" "no maps: $BENCH_ERR"
    fi
    t0=$(bench_now)
    bench_stop
    lab_note "$tool: stopped and $LUNS maps removed in $(bench_since "$t0") s"
  done
done
bench_finish "scsi_debug $HOSTS hosts x $LUNS LUNs"
