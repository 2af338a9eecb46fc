#!/bin/bash
# 34-sweep-busy: issue 18's sweep thread on the real kernel. multipathd-rs holds every member
# path's device/state open and re-reads it with pread at offset 0 on a thread of its own; a path
# that goes offline is failed by that thread without the engine lock.
#  1. sysfs regenerates the text on a pread at offset 0 of a file held open (python3 os.pread on
#     one fd before and after `echo offline > state`; the first read, running, is the control).
#  2. `show status --json`: the sweep holds the member paths' state files open (none read by
#     open/read/close).
#  3. While one client loops on `reconfigure` (a full sync under the engine lock each time) and
#     four loop on `show paths --json`, an idle path goes offline: F in dmsetup status (timing
#     busy_offline_to_F_s; the target lives in the benchmarks), and the sweep's own count of
#     paths it failed rose by one (its held-open fd saw the fresh state and it sent fail_path).
#     Control: the path was A before; running again, the checker (never the sweep) reinstates it.
# lab-udevd: no
# lab-timeout: 150
set -u
. "$LAB_LIB"
trap lab_mpd_cleanup EXIT

lab_scsi_debug 2 2
set -- $(lab_sd_disks)
[ $# -eq 4 ] || lab_fail "expected 4 scsi_debug disks, got $*"

# 1. pread at offset 0 on one open fd re-reads the attribute (a path not in any map yet).
p=$1
lab_capture pread.txt /usr/bin/python3 -c '
import os, subprocess, sys
f = os.open(sys.argv[1], os.O_RDONLY)
a = os.pread(f, 32, 0).decode().strip()
with open(sys.argv[1], "w") as w:
    w.write("offline\n")
b = os.pread(f, 32, 0).decode().strip()
with open(sys.argv[1], "w") as w:
    w.write("running\n")
c = os.pread(f, 32, 0).decode().strip()
print(a, b, c)
' "/sys/block/$p/device/state"
lab_assert_eq "pread at 0 of one open $p/device/state: before, offline, running again" \
  "running offline running" "$(cat "$LAB_OUT/pread.txt")"

mkdir -p "$LAB_MPD_DIR"
rm -f "$LAB_MPD_DIR/config.toml" # default settings
lab_mpd_start daemon.log
lab_poll 60 lab_is 2 lab_mpath_count || lab_fail "the daemon did not build 2 maps within 60 s"
sweep() { lab_mpd show status --json | jq -r ".status.sweep.$1"; }
lab_poll 10 lab_is 4 sweep open_files || {
  lab_capture show-status.json lab_mpd show status --json
  lab_fail "the sweep does not hold the 4 member paths' state files open"
}
lab_assert_eq "members read by open/read/close" 0 "$(sweep fallback)"
lab_capture show-status-start.txt lab_mpd show status

q=$2
qn=$(lab_devno "$q")
map=$(dmsetup table --target multipath | awk -v d="$qn" '{ for (i = 2; i <= NF; i++) if ($i == d) { sub(":$", "", $1); print $1; exit } }')
[ -n "$map" ] || lab_fail "no map holds $q ($qn)"
lab_assert_eq "$q in $map before (control)" A "$(lab_dm_path_state "$map" "$qn")"
fails0=$(sweep direct_fails)

# 3. A busy daemon: reconfigure back to back (each a full sync under the engine lock) and
# four show clients.
busy() { while :; do "$@" >/dev/null 2>&1; done; }
busy lab_mpd reconfigure &
lab_bg_add $!
for i in 1 2 3 4; do
  busy lab_mpd show paths --json &
  lab_bg_add $!
done
sleep 2
t0=$(lab_now)
lab_path_offline "$q"
lab_poll 10 lab_is F lab_dm_path_state "$map" "$qn" || lab_fail "$q offline under load: not F within 10 s"
t=$(lab_since "$t0")
lab_timing busy_offline_to_F_s "$t"
lab_capture uptime-busy.txt uptime
lab_poll 10 lab_is "$((fails0 + 1))" sweep direct_fails || {
  lab_capture show-status-busy.json lab_mpd show status --json
  lab_fail "the sweep's own count of failed paths did not rise: someone else failed $q"
}
lab_capture show-status-busy.txt lab_mpd show status
lab_path_running "$q"
lab_poll 30 lab_is A lab_dm_path_state "$map" "$qn" || lab_fail "$q running again: not A within 30 s"
lab_note "reinstated by the checker; the sweep's fail count stays $(sweep direct_fails)"
