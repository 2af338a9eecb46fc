#!/bin/bash
# 93-bench-addluns: with a daemon running on 2 hosts x 4 LUNs, time from raising scsi_debug's
# max_luns to 20 and scanning both hosts until the 16 new maps exist (20 in all) and hold both
# their paths (a map made from a LUN's first path is not redundant yet), for
# multipath-tools and multipathd-rs alternately. The new LUNs are deleted again after each
# repetition. Writes results.json.
# lab-udevd: yes
# lab-timeout: 1500
set -u
. "$LAB_LIB"
# shellcheck source=../../bench/lab-bench.sh
. "$LAB_WS/tests/bench/lab-bench.sh"

HOSTS=2 LUNS=4 NEW=16 TMO=300
# Each repetition adds and deletes 64 SCSI devices, ~1.5 s each for udevd under emulation: the
# bench may ask for fewer repetitions here (BENCH_REPS_ADDLUNS) to keep the guest run bounded.
BENCH_REPS=${BENCH_REPS_ADDLUNS:-$BENCH_REPS}
lab_scsi_debug "$HOSTS" "$LUNS"
lab_settle
bench_clean_state

# Deletes every scsi_debug disk with LUN >= $LUNS and lowers max_luns again.
drop_new_luns() {
  local d l
  for d in /sys/class/scsi_device/*; do
    l=${d##*:}
    [ "$l" -ge "$LUNS" ] 2>/dev/null && echo 1 >"$d/device/delete"
  done
  echo "$LUNS" >"$LAB_SD_SYSFS/max_luns"
  lab_settle 120
  lab_wait "back to $((HOSTS * LUNS)) disks" 120 sh -c "[ \$(ls /sys/class/scsi_disk | wc -l) -eq $((HOSTS * LUNS)) ]"
}

for rep in $(seq "$BENCH_REPS"); do
  if ((rep % 2)); then order="multipath-tools multipathd-rs"; else order="multipathd-rs multipath-tools"; fi
  for tool in $order; do
    [ "$(bench_maps)" = 0 ] || lab_dm_remove_all
    bench_start "$tool"
    if ! bench_wait_maps "$LUNS" 60; then
      bench_record add_16_luns "$tool" "$rep" "" "the first $LUNS maps never appeared: $BENCH_ERR"
      bench_stop
      continue
    fi
    sleep 2
    t0=$(bench_now)
    echo $((LUNS + NEW)) >"$LAB_SD_SYSFS/max_luns"
    for h in $(lab_sd_hosts); do echo '- - -' >"/sys/class/scsi_host/host$h/scan"; done
    if bench_wait_maps $((LUNS + NEW)) "$TMO" $(((LUNS + NEW) * HOSTS)); then
      bench_record add_16_luns "$tool" "$rep" "$(bench_since "$t0")"
    else
      bench_record add_16_luns "$tool" "$rep" "" "$BENCH_ERR"
    fi
    bench_stop
    drop_new_luns
  done
done
bench_finish "scsi_debug $HOSTS hosts x $LUNS LUNs, +$NEW LUNs"
