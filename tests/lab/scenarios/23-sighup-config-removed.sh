#!/bin/bash
# 23-sighup-config-removed: issue 12 lab item 3 on the real kernel, scsi_debug 2 hosts x 3 LUNs,
# no udevd. The daemon runs with a config that blacklists LUN0's WWID and sets
# polling_interval 3; it builds maps for LUN1 and LUN2 only.
#  1. The config file is removed, SIGHUP: every map stays exactly as it was (same maps, same
#     tables, same dm event numbers: no reload), `show config` is unchanged (blacklist and
#     polling_interval), LUN0 still has no map, and the daemon logged an ERROR naming the file
#     and the reason.
#  2. The same with an invalid file (a string where a number belongs).
#  Positive controls (the oracles can see a change): a valid file with polling_interval 7 and
#  the same blacklist changes `show config`; then a valid file without the blacklist makes the
#  daemon build LUN0's map (what a reload with the built-in configuration would have done in 1).
# lab-udevd: no
# lab-timeout: 300
set -u
. "$LAB_LIB"
trap lab_mpd_cleanup EXIT

lab_scsi_debug 2 3
read -r h0 _ <<<"$(lab_sd_hosts | tr '\n' ' ')"
lab_capture lun-scan.json "$LAB_BIN/lun-scan" list --json || lab_fail "lun-scan list --json failed"
jq -r 'if type == "array" then . else .paths end | .[] | "\(.dev) \(.devno) \(.hctl) \(.wwid)"' \
  "$LAB_OUT/lun-scan.json" | sort -k3,3V >"$LAB_OUT/paths.txt"
lab_note "paths: $(tr '\n' ';' <"$LAB_OUT/paths.txt")"
wwid_of_lun() { awk -v h="$h0:0:0:$1" '$3 == h { print $4 }' "$LAB_OUT/paths.txt"; }
w0=$(wwid_of_lun 0) w1=$(wwid_of_lun 1) w2=$(wwid_of_lun 2)
[ -n "$w0" ] && [ -n "$w1" ] && [ -n "$w2" ] || lab_fail "no WWID for LUN0..2 in lun-scan's list"

CFG="$LAB_MPD_DIR/config.toml"
# write_config POLLING [blacklist]: the daemon's config file.
write_config() {
  {
    printf '[defaults]\npolling_interval = %s\nfind_multipaths = "no"\n' "$1"
    [ "${2:-}" = blacklist ] && printf '\n[blacklist]\nwwid = ["^%s$"]\n' "$w0"
  } >"$CFG"
  cp "$CFG" "$LAB_OUT/config-$1-${2:-none}.toml"
}
mkdir -p "$LAB_MPD_DIR"
write_config 3 blacklist
lab_mpd_start daemon.log
lab_poll 60 lab_is 2 lab_mpath_count || lab_fail "the daemon did not build 2 maps within 60 s"
[ -z "$(lab_mpath_of_wwid "$w0")" ] || lab_fail "the blacklisted LUN0 got a map"

# The maps as the kernel has them: name, dm event number, table. Any reload changes the event
# number and usually the table; a new map adds a line.
maps_state() {
  local m
  for m in $(lab_mpath_maps); do
    printf '%s events=%s %s\n' "$m" "$(dmsetup info -c --noheadings -o events "$m" | tr -d ' ')" "$(dmsetup table "$m")"
  done
}
show_config() { lab_mpd show config; }
errors_logged() { grep -c ' ERROR ' "$LAB_OUT/daemon.log"; }

lab_capture maps-before.txt maps_state
lab_capture show-config-before.txt show_config || lab_fail "show config failed"
grep -q "polling_interval *3 " "$LAB_OUT/show-config-before.txt" || lab_fail "show config does not show polling_interval 3"
grep -q -- "$w0" "$LAB_OUT/show-config-before.txt" || lab_fail "show config does not show the blacklisted WWID"
lab_assert_eq "ERROR lines before any SIGHUP" 0 "$(errors_logged)"

# ------------------------------------------------------------------ 1. the file is removed
rm -f "$CFG"
lab_run kill -HUP "$LAB_MPD_PID"
lab_poll 60 lab_ge 1 errors_logged || lab_fail "no ERROR logged within 60 s after SIGHUP with the config removed"
err=$(grep ' ERROR ' "$LAB_OUT/daemon.log" | head -n 1)
lab_note "logged: $err"
lab_assert_match "the ERROR names the file and the reason" "$CFG.*No such file|No such file.*$CFG" "$err"
lab_assert_match "the ERROR says the running configuration stays" "running configuration stays in effect" "$err"
lab_capture maps-after-removed.txt maps_state
lab_assert_eq "maps, tables and event numbers after SIGHUP with the config removed" \
  "$(cat "$LAB_OUT/maps-before.txt")" "$(cat "$LAB_OUT/maps-after-removed.txt")"
lab_capture show-config-after-removed.txt show_config || lab_fail "the daemon no longer answers"
lab_assert_eq "show config after SIGHUP with the config removed" \
  "$(cat "$LAB_OUT/show-config-before.txt")" "$(cat "$LAB_OUT/show-config-after-removed.txt")"
# A moment later still: nothing was deferred.
sleep 4
lab_assert_eq "maps 4 s later" "$(cat "$LAB_OUT/maps-before.txt")" "$(maps_state)"
[ -z "$(lab_mpath_of_wwid "$w0")" ] || lab_fail "the blacklist was dropped: LUN0 got a map"

# ------------------------------------------------------------------ 2. the file is invalid
printf '[defaults]\npolling_interval = "often"\n' >"$CFG"
lab_run kill -HUP "$LAB_MPD_PID"
lab_poll 60 lab_ge 2 errors_logged || lab_fail "no ERROR logged within 60 s after SIGHUP with an invalid config"
err=$(grep ' ERROR ' "$LAB_OUT/daemon.log" | sed -n 2p)
lab_note "logged: $err"
lab_assert_match "the ERROR names the file and the line" "$CFG line 2" "$err"
lab_assert_eq "maps after SIGHUP with an invalid config" "$(cat "$LAB_OUT/maps-before.txt")" "$(maps_state)"
lab_assert_eq "show config after SIGHUP with an invalid config" \
  "$(cat "$LAB_OUT/show-config-before.txt")" "$(show_config)"

# ------------------------------------------------------------------ positive controls
write_config 7 blacklist
lab_run kill -HUP "$LAB_MPD_PID"
lab_poll 60 sh -c "'$LAB_BIN/multipathd-rs' --socket '$LAB_MPD_SOCK' show config | grep -q 'polling_interval *7 '" \
  || lab_fail "control: a valid changed config did not change polling_interval in show config"
printf 'ok: control: SIGHUP with a valid config changes polling_interval to 7\n' | tee -a "$LAB_EVIDENCE"
lab_capture show-config-control.txt show_config
lab_assert_eq "control: maps stay (same blacklist)" 2 "$(lab_mpath_count)"

write_config 7
lab_run kill -HUP "$LAB_MPD_PID"
lab_poll 60 lab_is 3 lab_mpath_count || lab_fail "control: without the blacklist LUN0 got no map (the oracle would be blind)"
[ -n "$(lab_mpath_of_wwid "$w0")" ] || lab_fail "control: the third map is not LUN0's"
printf 'ok: control: dropping the blacklist builds LUN0'"'"'s map, as a lost blacklist would\n' | tee -a "$LAB_EVIDENCE"
lab_assert_eq "ERROR lines at the end (one per refused reload)" 2 "$(errors_logged)"
lab_mpd_stop TERM || lab_fail "the daemon did not stop on SIGTERM"
exit 0
