#!/bin/bash
# 22-no-path-retry-again: issue 12 lab item 2 on the real kernel. scsi_debug 2 hosts x 2 LUNs, no
# udevd, polling_interval 2 s, `[overrides] no_path_retry = 3`, LUN1 `no_path_retry = "queue"`.
#  1. LUN0: both paths offline: a queued O_DIRECT write fails after about 3 intervals.
#  2. With the countdown run out and every path still down, the daemon reloads the map twice:
#     the offline path on host0 is deleted (reload without it), then SIGHUP with a changed
#     table (path_selector round-robin). After each, a new write fails within about 3 intervals
#     instead of hanging: the reloads must not bring queue_if_no_path back for good.
#  3. A path returns (host0 rescanned: the daemon reloads the map with the new path): the map
#     queues again.
#  4. All paths go again: a queued write fails again after about 3 intervals; it does not hang.
# Control (LUN1, no_path_retry queue): a write with no path is still blocked after the longest
# window allowed above (so the oracle "failed in time" does see a write that hangs); then a path
# returns and it completes.
# lab-udevd: no
# lab-timeout: 300
set -u
. "$LAB_LIB"
trap lab_mpd_cleanup EXIT
INTERVAL=2
LO=$((2 * INTERVAL)) HI=$((5 * INTERVAL + 4)) # the window "about 3 intervals" (as 08)

lab_scsi_debug 2 2
lab_paths_table
w1=$(lab_udev_serial "$(lab_path_of "$h0" 1)" 2>/dev/null)
[ -n "$w1" ] || w1=$("$LAB_BIN/lun-scan" list --json | jq -r --arg d "$(lab_path_of "$h0" 1)" \
  'if type == "array" then . else .paths end | .[] | select(.dev == $d) | .wwid')
[ -n "$w1" ] || lab_fail "no WWID for LUN1"

mkdir -p "$LAB_MPD_DIR"
write_config() { # [EXTRA OVERRIDE LINE]
  cat >"$LAB_MPD_DIR/config.toml" <<TOML
[defaults]
polling_interval = $INTERVAL

[overrides]
no_path_retry = 3
${1:-}

[[multipaths]]
wwid = "$w1"
no_path_retry = "queue"
TOML
}
write_config
cp "$LAB_MPD_DIR/config.toml" "$LAB_OUT/config.toml"
lab_mpd_start daemon.log
lab_poll 60 lab_is 2 lab_mpath_count || lab_fail "the daemon did not build 2 maps within 60 s"
mapA=$(lab_map_of_devno "$(lab_devno "$(lab_path_of "$h0" 0)")")
mapB=$(lab_map_of_devno "$(lab_devno "$(lab_path_of "$h0" 1)")")
[ -n "$mapA" ] && [ -n "$mapB" ] || lab_fail "no map for some LUN: A=$mapA B=$mapB"
lab_poll 15 test -b "/dev/mapper/$mapA" || lab_fail "/dev/mapper/$mapA does not exist"
lab_assert_match "$mapA queues (no_path_retry 3)" 'queue_if_no_path' "$(dmsetup table "$mapA")"
W="$LAB_MPD_DIR/w"
mkdir -p "$W"
head -c 4096 /dev/urandom >"$W/pat"

# bg_write NAME MAP: a 4 KiB O_DIRECT write in the background; $W/NAME.rc its exit status,
# $W/NAME.end when it ended.
bg_write() {
  rm -f "$W/$1.rc" "$W/$1.end"
  (
    dd if="$W/pat" of="/dev/mapper/$2" bs=4096 count=1 oflag=direct status=none 2>"$LAB_OUT/$1.err"
    rc=$?
    echo "$EPOCHREALTIME" >"$W/$1.end"
    echo "$rc" >"$W/$1.rc"
  ) &
  lab_bg_add $!
}
all_F() { # MAP SDX...
  local m="$1" d
  shift
  for d in "$@"; do [ "$(lab_dm_path_state "$m" "$(lab_devno "$d")")" = F ] || return 1; done
}
# fails_in_window NAME T0 WHAT: the write NAME (started at T0) must have failed within [LO, HI] s
# of T0 (LO 0 when the countdown already ran out: it must fail at once, not count down again).
fails_in_window() {
  local name="$1" t0="$2" what="$3" lo="${4:-$LO}" s
  lab_poll $((HI + 10)) test -e "$W/$name.rc" || lab_fail "$what: the write is still blocked $((HI + 10)) s later (hangs)"
  s=$(awk -v a="$t0" -v b="$(cat "$W/$name.end")" 'BEGIN { printf "%.3f", b - a }')
  lab_timing "${name}_to_io_error_s" "$s"
  lab_assert_eq "$what: the write failed (dd exit status non-zero)" yes \
    "$(test "$(cat "$W/$name.rc")" != 0 && echo yes || echo "no (exit $(cat "$W/$name.rc"))")"
  lab_assert_eq "$what: failed after $s s, window [$lo, $HI] s" yes \
    "$(awk -v t="$s" -v lo="$lo" -v hi="$HI" 'BEGIN { print (t >= lo && t <= hi) ? "yes" : "no" }')"
}

# ------------------------------------------------------------------ 1. first outage
a0=$(lab_path_of "$h0" 0) a1=$(lab_path_of "$h1" 0)
lab_path_offline "$a0"
lab_path_offline "$a1"
t0=$(lab_now)
bg_write w1 "$mapA"
lab_poll 20 all_F "$mapA" "$a0" "$a1" || lab_fail "$mapA: both paths not F 20 s after going offline"
fails_in_window w1 "$t0" "outage 1"
lab_assert_eq "$mapA: queueing off after the countdown" no "$(dmsetup table "$mapA" | grep -q queue_if_no_path && echo yes || echo no)"

# ------------------------------------------------------------------ 2. reloads while given up
a0n=$(lab_devno "$a0")
lab_path_delete "$a0"
lab_poll 30 sh -c "! dmsetup table '$mapA' | grep -q ' $a0n '" \
  || lab_fail "$mapA: the daemon did not reload the map without the deleted $a0 within 30 s"
lab_capture table-A-after-delete.txt dmsetup table "$mapA"
t0=$(lab_now)
bg_write w2 "$mapA"
fails_in_window w2 "$t0" "after a reload with every path down (path deleted)" 0
write_config 'path_selector = "round-robin 0"'
lab_run kill -HUP "$LAB_MPD_PID"
lab_poll 30 sh -c "dmsetup table '$mapA' | grep -q round-robin" \
  || lab_fail "$mapA: not reloaded with round-robin within 30 s of SIGHUP"
lab_capture table-A-after-sighup.txt dmsetup table "$mapA"
t0=$(lab_now)
bg_write w3 "$mapA"
fails_in_window w3 "$t0" "after a SIGHUP reload with every path down" 0

# ------------------------------------------------------------------ 3. a path returns
lab_scan_host "$h0" 0 0 0
lab_poll 30 sh -c "ls /sys/class/scsi_host/host$h0/device/target$h0:0:0/$h0:0:0:0/block 2>/dev/null | grep -q ." \
  || lab_fail "LUN0 did not come back on host$h0 after a scan"
a0=$(ls "/sys/class/scsi_host/host$h0/device/target$h0:0:0/$h0:0:0:0/block")
lab_poll 60 lab_is A lab_dm_path_state "$mapA" "$(lab_devno "$a0")" \
  || lab_fail "$mapA: the returned path $a0 is not in the map, active, within 60 s"
lab_poll 20 sh -c "dmsetup table '$mapA' | grep -q queue_if_no_path" \
  || lab_fail "$mapA: queueing not on again after a path returned (table: $(dmsetup table "$mapA"))"
lab_expect_ok "$mapA: a write with a path back" dd if="$W/pat" of="/dev/mapper/$mapA" bs=4096 count=1 oflag=direct status=none

# ------------------------------------------------------------------ 4. second outage
lab_path_offline "$a0"
t0=$(lab_now)
bg_write w4 "$mapA"
lab_poll 20 all_F "$mapA" "$a0" "$a1" || lab_fail "$mapA: paths not F 20 s after going offline again"
fails_in_window w4 "$t0" "outage 2"

# ------------------------------------------------------------------ control: queue hangs
b0=$(lab_path_of "$h0" 1) b1=$(lab_path_of "$h1" 1)
lab_path_offline "$b0"
lab_path_offline "$b1"
bg_write ctl "$mapB"
lab_poll 20 all_F "$mapB" "$b0" "$b1" || lab_fail "$mapB: both paths not F 20 s after going offline"
sleep $((HI + 2))
lab_assert_eq "control ($mapB, queue): the write is still blocked after $((HI + 2)) s, so the oracle would see a hang" no \
  "$(test -e "$W/ctl.rc" && echo "yes (exit $(cat "$W/ctl.rc"))" || echo no)"
lab_path_running "$b1"
lab_poll 60 test -e "$W/ctl.rc" || lab_fail "control: the write on $mapB did not complete 60 s after $b1 returned"
lab_assert_eq "control: the write completed once a path returned" 0 "$(cat "$W/ctl.rc")"

lab_mpd_stop TERM || lab_fail "the daemon did not stop on SIGTERM"
lab_run cat "$LAB_OUT/timings.json"
