#!/bin/bash
# 08-no-path-retry: issue 7 lab items 3 and 4 on the real kernel, scsi_debug 2 hosts x 4 LUNs,
# no udevd. Config: polling_interval 2 s, `[overrides] no_path_retry = 3` (overrides beat the
# built-in scsi_debug hwtable entry, which says fail) and a `[[multipaths]]` entry giving LUN1's
# WWID `no_path_retry = "queue"`.
#  1. no_path_retry 3 (LUN0's map): both paths offline, a 4 KiB O_DIRECT write blocks (queued:
#     still running after 1 s), then fails after about 3 checker intervals (measured from the
#     last path going offline to dd's exit; must lie within [2, 5] intervals + 4 s slack);
#     the table loses queue_if_no_path; paths back -> A, and queueing is switched on again.
#  2. no_path_retry queue (LUN1's map): both paths offline, a write of a known 64 KiB pattern
#     stays queued longer than the 3-interval map needed to fail; one path back -> the write
#     completes (time recorded) and reads back intact.
#  3. kill -9 of the daemon while an O_DIRECT loop runs on LUN2's map: I/O continues without the
#     daemon (no error), a restarted daemon (replacing the stale socket) adopts the 4 maps with
#     their tables unchanged, and resumes checking: a path of the idle LUN3 map set offline
#     after the restart gets F (time recorded) and `show paths` shows it failed.
# lab-udevd: no
# lab-timeout: 480
set -u
. "$LAB_LIB"
trap lab_mpd_cleanup EXIT
INTERVAL=2

lab_scsi_debug 2 4
read -r h0 h1 <<<"$(lab_sd_hosts | tr '\n' ' ')"
lab_capture lun-scan.json "$LAB_BIN/lun-scan" list --json || lab_fail "lun-scan list --json failed"
jq -r 'if type == "array" then . else .paths end | .[] | "\(.dev) \(.devno) \(.hctl) \(.wwid)"' \
  "$LAB_OUT/lun-scan.json" | sort -k3,3V >"$LAB_OUT/paths.txt"
lab_note "hosts $h0 $h1; paths: $(tr '\n' ';' <"$LAB_OUT/paths.txt")"
wwid_of_lun() { awk -v h="$h0:0:0:$1" '$3 == h { print $4 }' "$LAB_OUT/paths.txt"; }
w0=$(wwid_of_lun 0) w1=$(wwid_of_lun 1)
[ -n "$w0" ] && [ -n "$w1" ] || lab_fail "no WWID for LUN0/LUN1 in lun-scan's list"

mkdir -p "$LAB_MPD_DIR"
cat >"$LAB_MPD_DIR/config.toml" <<TOML
[defaults]
polling_interval = $INTERVAL
find_multipaths = "yes"

[overrides]
no_path_retry = 3

[[multipaths]]
wwid = "$w1"
no_path_retry = "queue"
TOML
cp "$LAB_MPD_DIR/config.toml" "$LAB_OUT/config.toml"
lab_capture config-show.txt lab_mpd config show
lab_mpd_start daemon.log
lab_poll 60 lab_is 4 lab_mpath_count || lab_fail "the daemon did not build 4 maps within 60 s"
mapA=$(lab_mpath_of_wwid "$w0") mapB=$(lab_mpath_of_wwid "$w1")
mapC=$(lab_mpath_of_wwid "$(wwid_of_lun 2)") mapD=$(lab_mpath_of_wwid "$(wwid_of_lun 3)")
lab_note "maps: LUN0 $mapA (no_path_retry 3), LUN1 $mapB (queue), LUN2 $mapC (kill -9 I/O), LUN3 $mapD (checked after restart)"
for m in "$mapA" "$mapB" "$mapC" "$mapD"; do
  lab_poll 15 test -b "/dev/mapper/$m" || lab_fail "/dev/mapper/$m does not exist"
done
lab_capture dmsetup-table-start.txt dmsetup table --target multipath
lab_capture show-maps-start.json lab_mpd show maps --json
lab_assert_match "$mapA table queues (no_path_retry 3)" ' multipath [0-9]+ .*queue_if_no_path' "$(dmsetup table "$mapA")"
lab_assert_match "$mapB table queues (no_path_retry queue)" ' multipath [0-9]+ .*queue_if_no_path' "$(dmsetup table "$mapB")"
W="$LAB_MPD_DIR/w"
mkdir -p "$W"

# bg_dd NAME DD-ARGS...: dd in the background; $W/NAME.rc gets its exit status, NAME.end the time.
bg_dd() {
  local name="$1"
  shift
  rm -f "$W/$name.rc" "$W/$name.end"
  (
    dd "$@" status=none 2>"$LAB_OUT/$name.err"
    rc=$?
    echo "$EPOCHREALTIME" >"$W/$name.end"
    echo "$rc" >"$W/$name.rc"
  ) &
  lab_bg_add $!
}
two_states() { echo "$(lab_dm_path_state "$1" "$2") $(lab_dm_path_state "$1" "$3")"; }
table_queues() { dmsetup table "$1" | grep -q queue_if_no_path; }
all_paths_F() { # MAP DEVNO...
  local m="$1" n
  shift
  for n in "$@"; do [ "$(lab_dm_path_state "$m" "$n")" = F ] || return 1; done
}

# ------------------------------------------------------------------ 1. no_path_retry 3
a0=$(lab_path_of "$h0" 0) a1=$(lab_path_of "$h1" 0)
a0n=$(lab_devno_of "$a0") a1n=$(lab_devno_of "$a1")
head -c 4096 /dev/urandom >"$W/a.pat"
lab_path_offline "$a0"
lab_path_offline "$a1"
t_gone=$(lab_now)
bg_dd npr3 if="$W/a.pat" of="/dev/mapper/$mapA" bs=4096 count=1 oflag=direct
sleep 1
lab_assert_eq "write on $mapA with no path: still queued after 1 s" no "$(test -e "$W/npr3.rc" && echo yes || echo no)"
lab_poll 10 all_paths_F "$mapA" "$a0n" "$a1n" || lab_fail "$mapA: both paths not F 10 s after going offline"
lab_capture dmsetup-status-A-nopath.txt dmsetup status "$mapA"
lab_capture show-maps-A-nopath.json lab_mpd show maps --json
lab_poll $((8 * INTERVAL + 10)) test -e "$W/npr3.rc" || lab_fail "the queued write on $mapA did not fail within $((8 * INTERVAL + 10)) s (no_path_retry 3, interval $INTERVAL s)"
npr3_s=$(awk -v a="$t_gone" -v b="$(cat "$W/npr3.end")" 'BEGIN { printf "%.3f", b - a }')
lab_timing npr3_paths_gone_to_io_error_s "$npr3_s"
lab_timing npr3_expected_s "$((3 * INTERVAL))"
lab_assert_eq "queued write on $mapA fails once queueing stops (dd exit status non-zero)" yes \
  "$(test "$(cat "$W/npr3.rc")" != 0 && echo yes || echo "no (exit $(cat "$W/npr3.rc"))")"
lab_run cat "$LAB_OUT/npr3.err"
lab_assert_eq "I/O failed after about 3 intervals ($npr3_s s; window [$((2 * INTERVAL)), $((5 * INTERVAL + 4))] s)" yes \
  "$(awk -v t="$npr3_s" -v i="$INTERVAL" 'BEGIN { print (t >= 2 * i && t <= 5 * i + 4) ? "yes" : "no" }')"
lab_assert_eq "$mapA queueing switched off (no queue_if_no_path in the table)" no \
  "$(dmsetup table "$mapA" | grep -q queue_if_no_path && echo yes || echo no)"
t0=$(lab_now)
lab_path_running "$a0"
lab_path_running "$a1"
lab_poll 60 lab_is "A A" two_states "$mapA" "$a0n" "$a1n" \
  || lab_fail "$mapA paths not A within 60 s of running again"
lab_timing npr3_running_to_A_s "$(lab_since "$t0")"
lab_poll 10 table_queues "$mapA" \
  || lab_fail "$mapA: queueing not switched on again after its paths returned (table: $(dmsetup table "$mapA"))"
lab_expect_ok "write on $mapA after the paths returned" dd if="$W/a.pat" of="/dev/mapper/$mapA" bs=4096 count=1 oflag=direct status=none

# ------------------------------------------------------------------ 2. no_path_retry queue
b0=$(lab_path_of "$h0" 1) b1=$(lab_path_of "$h1" 1)
b0n=$(lab_devno_of "$b0") b1n=$(lab_devno_of "$b1")
head -c 65536 /dev/urandom >"$W/b.pat"
lab_path_offline "$b0"
lab_path_offline "$b1"
t_gone=$(lab_now)
bg_dd queue if="$W/b.pat" of="/dev/mapper/$mapB" bs=65536 seek=7 count=1 oflag=direct
lab_poll 10 all_paths_F "$mapB" "$b0n" "$b1n" || lab_fail "$mapB: both paths not F 10 s after going offline"
hold=$((5 * INTERVAL + 4))
sleep "$hold"
lab_assert_eq "write on $mapB (queue) still queued after $hold s without a path" no \
  "$(test -e "$W/queue.rc" && echo "yes (exit $(cat "$W/queue.rc"))" || echo no)"
lab_assert_match "$mapB still queueing" 'queue_if_no_path' "$(dmsetup table "$mapB")"
lab_capture show-maps-B-nopath.json lab_mpd show maps --json
t0=$(lab_now)
lab_path_running "$b1"
lab_poll 60 test -e "$W/queue.rc" || lab_fail "the queued write on $mapB did not complete within 60 s of $b1 returning"
lab_timing queue_blocked_s "$(awk -v a="$t_gone" -v b="$(cat "$W/queue.end")" 'BEGIN { printf "%.3f", b - a }')"
lab_timing queue_path_back_to_io_done_s "$(awk -v a="$t0" -v b="$(cat "$W/queue.end")" 'BEGIN { printf "%.3f", b - a }')"
lab_assert_eq "queued write on $mapB completed (dd exit status)" 0 "$(cat "$W/queue.rc")"
lab_expect_ok "the queued write reads back intact" \
  sh -c "dd if=/dev/mapper/$mapB bs=65536 skip=7 count=1 iflag=direct status=none | cmp - '$W/b.pat'"
lab_path_running "$b0"
lab_poll 60 lab_is "A A" two_states "$mapB" "$b0n" "$b1n" \
  || lab_fail "$mapB paths not A within 60 s"

# ------------------------------------------------------------------ 3. kill -9 during I/O
lab_io_start "/dev/mapper/$mapC"
lab_io_progress 3 "daemon running"
lab_capture tables-before-kill.txt sh -c 'dmsetup table --target multipath | sort'
killed_pid=$LAB_MPD_PID
lab_mpd_stop KILL
lab_assert_eq "daemon pid $killed_pid gone after kill -9" no "$(kill -0 "$killed_pid" 2>/dev/null && echo yes || echo no)"
lab_assert_eq "maps after kill -9" 4 "$(lab_mpath_count)"
lab_io_progress 5 "no daemon"
lab_note "stale socket left by the killed daemon: $(ls -l "$LAB_MPD_SOCK" 2>&1)"
t0=$(lab_now)
lab_mpd_start daemon.log
lab_timing restart_after_kill9_to_socket_s "$(lab_since "$t0")"
lab_poll 30 lab_is 4 lab_mpd_map_count \
  || lab_fail "the restarted daemon does not show 4 maps within 30 s"
lab_capture tables-after-restart.txt sh -c 'dmsetup table --target multipath | sort'
lab_assert_eq "tables after restart (adopted, no reload)" "$(cat "$LAB_OUT/tables-before-kill.txt")" \
  "$(cat "$LAB_OUT/tables-after-restart.txt")"
lab_io_progress 3 "daemon restarted"
# Checking resumed: an idle map's path fails after the restart.
d1=$(lab_path_of "$h1" 3)
d1n=$(lab_devno_of "$d1")
sleep 1
t0=$(lab_now)
lab_path_offline "$d1"
lab_poll 60 lab_is F lab_dm_path_state "$mapD" "$d1n" \
  || lab_fail "$d1 of idle $mapD offline after the restart: not F within 60 s (checking did not resume)"
lab_timing restarted_idle_offline_to_F_s "$(lab_since "$t0")"
lab_poll 15 lab_is failed lab_mpd_path_dm_state "$d1" \
  || lab_fail "show paths does not show $d1 failed"
lab_capture show-paths-after-restart.txt lab_mpd show paths
lab_path_running "$d1"
lab_poll 60 lab_is A lab_dm_path_state "$mapD" "$d1n" || lab_fail "$d1 not reinstated within 60 s"
lab_io_stop
lab_timing io_iterations "$(lab_io_iters)"
lab_assert_eq "I/O errors over $(lab_io_iters) iterations across kill -9 and restart" 0 "$(lab_io_errors)"
lab_io_verify "$mapC reads back equal to everything written"
lab_run cat "$LAB_OUT/timings.json"

# ------------------------------------------------------------------ teardown
lab_mpd_stop TERM || lab_fail "the daemon did not stop on SIGTERM"
for m in $(lab_mpath_maps); do lab_expect_ok "remove $m" lab_map_remove "$m"; done
lab_expect_ok "rmmod scsi_debug" rmmod scsi_debug
