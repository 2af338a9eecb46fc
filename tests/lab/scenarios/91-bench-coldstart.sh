#!/bin/bash
# 91-bench-coldstart: time from daemon start to every map present in
# `dmsetup ls --target multipath` with all its paths in its table, multipath-tools and multipathd-rs on the same scsi_debug
# topology (2 hosts x 4 LUNs), alternating which tool goes first in each repetition.
# Writes results.json for `cargo run --release -p bench` (never asserts times).
# lab-udevd: yes
# lab-timeout: 600
set -u
. "$LAB_LIB"
# shellcheck source=../../bench/lab-bench.sh
. "$LAB_WS/tests/bench/lab-bench.sh"

HOSTS=2 LUNS=4
lab_scsi_debug "$HOSTS" "$LUNS"
lab_settle
bench_clean_state

for rep in $(seq "$BENCH_REPS"); do
  if ((rep % 2)); then order="multipath-tools multipathd-rs"; else order="multipathd-rs multipath-tools"; fi
  for tool in $order; do
    [ "$(bench_maps)" = 0 ] || lab_dm_remove_all
    t0=$(bench_now)
    bench_start "$tool"
    if bench_wait_maps "$LUNS" 60 $((LUNS * HOSTS)); then
      bench_record cold_start "$tool" "$rep" "$(bench_since "$t0")"
    else
      bench_record cold_start "$tool" "$rep" "" "$BENCH_ERR"
    fi
    bench_stop
  done
done
bench_finish "scsi_debug $HOSTS hosts x $LUNS LUNs"
