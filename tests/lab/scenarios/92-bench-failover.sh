#!/bin/bash
# 92-bench-failover: failover detection and reinstatement latency, multipath-tools and
# multipathd-rs on the same scsi_debug topology (2 hosts x 4 LUNs), each with its defaults.
# - fail_idle: a path of an idle map set offline (device/state) -> `F` in `dmsetup status`
# - reinstate_idle: the path set running again -> `A`
# - fail_busy / reinstate_busy: the same on a map with a dd O_DIRECT read loop running
# Each daemon first runs 10 s after its maps exist, and every fault waits a random 0-2 s, so
# faults land at random points of the checkers' intervals. The idle map's two figures get
# $BENCH_REPS_FAIL_IDLE repetitions (issue 18's target is a median over 10), the busy map's
# $BENCH_REPS. Writes results.json.
# lab-udevd: yes
# lab-timeout: 1200
set -u
. "$LAB_LIB"
# shellcheck source=../../bench/lab-bench.sh
. "$LAB_WS/tests/bench/lab-bench.sh"

HOSTS=2 LUNS=4 TMO=60
IDLE_REPS=${BENCH_REPS_FAIL_IDLE:-10}
((IDLE_REPS >= BENCH_REPS)) || IDLE_REPS=$BENCH_REPS
lab_scsi_debug "$HOSTS" "$LUNS"
lab_settle
bench_clean_state

# measure METRIC TOOL REP MAP DEVNO SDX STATE FLAG
measure() {
  local metric="$1" tool="$2" rep="$3" map="$4" devno="$5" sd="$6" state="$7" flag="$8"
  sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", r % 200 / 100 }')"
  BENCH_T0=$(bench_now)
  echo "$state" >"/sys/block/$sd/device/state"
  if bench_wait_flag "$map" "$devno" "$flag" "$TMO"; then
    bench_record "$metric" "$tool" "$rep" "$BENCH_SECS"
    return 0
  fi
  bench_record "$metric" "$tool" "$rep" "" "$BENCH_ERR"
  return 1
}

# restore MAP DEVNO SDX: path running and active again before the next measurement.
restore() {
  echo running >"/sys/block/$3/device/state"
  local i
  for i in $(seq 100); do
    [ "$(bench_path_flag "$1" "$2")" = A ] && return 0
    sleep 0.1
  done
  dmsetup message "$1" 0 reinstate_path "$2" >/dev/null 2>&1
}

for tool in multipath-tools multipathd-rs; do
  bench_start "$tool"
  if ! bench_wait_maps "$LUNS" 60; then
    for rep in $(seq "$IDLE_REPS"); do
      for m in fail_idle reinstate_idle; do
        bench_record "$m" "$tool" "$rep" "" "no maps to measure on: $BENCH_ERR"
      done
      ((rep > BENCH_REPS)) && continue
      for m in fail_busy reinstate_busy; do
        bench_record "$m" "$tool" "$rep" "" "no maps to measure on: $BENCH_ERR"
      done
    done
    bench_stop
    continue
  fi
  sleep 10
  # (no process substitution: the guest has no /dev/fd)
  maps=$(bench_map_names)
  idle=$(echo "$maps" | sed -n 1p) busy=$(echo "$maps" | sed -n 2p)
  read -r idle_devno idle_sd <<<"$(bench_first_path "$idle")"
  read -r busy_devno busy_sd <<<"$(bench_first_path "$busy")"
  busy_minor=$(dmsetup info -c --noheadings -o minor "$busy" | tr -d ' ')
  lab_note "$tool: idle map $idle path $idle_sd ($idle_devno); busy map $busy (dm-$busy_minor) path $busy_sd ($busy_devno)"
  (while :; do dd if="/dev/dm-$busy_minor" of=/dev/null bs=4k count=256 iflag=direct 2>/dev/null; done) &
  dd_pid=$!
  for rep in $(seq "$IDLE_REPS"); do
    measure fail_idle "$tool" "$rep" "$idle" "$idle_devno" "$idle_sd" offline F
    measure reinstate_idle "$tool" "$rep" "$idle" "$idle_devno" "$idle_sd" running A
    restore "$idle" "$idle_devno" "$idle_sd"
    ((rep > BENCH_REPS)) && continue
    measure fail_busy "$tool" "$rep" "$busy" "$busy_devno" "$busy_sd" offline F
    measure reinstate_busy "$tool" "$rep" "$busy" "$busy_devno" "$busy_sd" running A
    restore "$busy" "$busy_devno" "$busy_sd"
  done
  kill "$dd_pid" 2>/dev/null
  wait "$dd_pid" 2>/dev/null
  bench_stop
done
bench_finish "scsi_debug $HOSTS hosts x $LUNS LUNs; idle map $IDLE_REPS repetitions, busy map $BENCH_REPS"
