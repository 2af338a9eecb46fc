#!/bin/bash
# 32-dm-events: waiting for device-mapper events on the real kernel (`dm-tables events`:
# DM_DEV_ARM_POLL + poll, every map's event number from one DM_LIST_DEVICES), the interface
# multipathd-rs's dm events thread uses. Controls first: with nothing happening a waiter times
# out, also one that returns on any wake. Then a waiter is woken by `dmsetup message MAP 0
# fail_path` and reports the map with the kernel's new event number; a table reload wakes an
# --any waiter (the table swap's global event) while the map's own event number stays and a
# plain waiter is not told (what the simulated kernel copies); `queue_if_no_path` raises no
# event at all; rename and remove are reported; the one-listing numbers equal dmsetup's.
# lab-udevd: no
# lab-timeout: 240
set -u
. "$LAB_LIB"

norm() { tr -s ' \t' ' ' | sed 's/^ //; s/ $//'; }
DM() { "$LAB_BIN/dm-tables" --backend kernel "$@"; }
kevents() { dmsetup info -c --noheadings -o events "$1" | norm; }
now() { date +%s.%N; }

# waiter FILE ARGS...: `dm-tables ARGS` in the background (pid in $waiter); returns once it
# has armed and taken its baseline, so what the caller does next is after it.
waiter() {
  local out=$1
  shift
  DM "$@" >"$LAB_OUT/$out" 2>"$LAB_OUT/$out.err" &
  waiter=$!
  lab_wait "the waiter for $out to arm" 20 grep -q "waiting for a device-mapper event" "$LAB_OUT/$out.err"
}
# waited DESC EXPECTED_STATUS: the waiter's exit status
waited() {
  local rc=0
  wait "$waiter" || rc=$?
  lab_assert_eq "$1" "$2" "$rc"
}

lab_scsi_debug 2 1
set -- $(lab_sd_disks)
p1=$(lab_devno "$1") p2=$(lab_devno "$2")
sectors=$(lab_sectors "$1")
table="0 $sectors multipath 0 0 1 1 round-robin 0 2 1 $p1 1 $p2 1"
lab_expect_ok "create the multipath map labev" DM create labev --table "$table"
lab_expect_ok "create a second map (linear) labln" dmsetup create labln --table "0 8 linear $p2 0"
lab_capture dm-version.txt dmsetup version

# every map's event number from one listing = dmsetup's
lab_expect_ok "dm-tables message fail_path" DM message labev fail_path "$p2"
lab_capture numbers.json DM --json event-numbers || lab_fail "event-numbers failed"
for m in labev labln; do
  lab_assert_eq "event number of $m from one DM_LIST_DEVICES = dmsetup's" "$(kevents "$m")" \
    "$(jq -r --arg m "$m" '.[$m]' "$LAB_OUT/numbers.json")"
done
lab_assert_eq "labev's event number moved with fail_path" 1 "$(kevents labev)"

# controls: nothing happens, both kinds of waiter time out
waiter none.txt events --timeout 1.5
waited "a waiter with no event times out" 1
grep -q "timed out" "$LAB_OUT/none.txt.err" || lab_fail "the timeout does not say so: $(cat "$LAB_OUT/none.txt.err")"
waiter none-any.txt events --any --timeout 1.5
waited "a waiter on any wake, with no event, times out" 1

# a path failed by message wakes the waiter with the map and its new number
ev0=$(kevents labev)
waiter fail.json --json events --timeout 60
t0=$(now)
lab_expect_ok "dmsetup message labev 0 fail_path $p1" dmsetup message labev 0 fail_path "$p1"
waited "the waiter woke on fail_path" 0
t1=$(now)
lab_note "fail_path to waiter exit: $(echo "$t1 - $t0" | bc) s"
lab_assert_eq "the waiter reports labev with the kernel's event number" "$(kevents labev)" \
  "$(jq -r '.changed[] | select(.map == "labev") | .event_nr' "$LAB_OUT/fail.json")"
lab_assert_eq "the event number moved by one" "$((ev0 + 1))" "$(kevents labev)"
lab_assert_eq "only labev changed" "labev" "$(jq -r '[.changed[].map] | join(",")' "$LAB_OUT/fail.json")"

# a table reload: the swap wakes an --any waiter; the map's own number stays
ev=$(kevents labev)
waiter reload-any.txt events --any --timeout 60
lab_expect_ok "dmsetup reload labev" dmsetup reload labev --table "$table"
lab_expect_ok "dmsetup resume labev (the table swap)" dmsetup resume labev
waited "the table swap woke the --any waiter" 0
lab_assert_eq "no map's number changed on the reload" "woken, no map's event number changed" "$(cat "$LAB_OUT/reload-any.txt")"
lab_assert_eq "labev's event number after the reload" "$ev" "$(kevents labev)"
waiter reload.txt events --timeout 2
lab_expect_ok "dmsetup reload labev again" dmsetup reload labev --table "$table"
lab_expect_ok "dmsetup resume labev again" dmsetup resume labev
waited "a reload is not reported as a map's event" 1

# queue_if_no_path raises no event at all (control above: the same waiter wakes on fail_path)
waiter qinp.txt events --any --timeout 1.5
lab_expect_ok "dmsetup message labev 0 queue_if_no_path" dmsetup message labev 0 queue_if_no_path
waited "queue_if_no_path woke nobody" 1
lab_assert_eq "labev's event number after queue_if_no_path" "$ev" "$(kevents labev)"
lab_expect_ok "back to fail_if_no_path" dmsetup message labev 0 fail_if_no_path

# rename and remove are reported
waiter rename.txt events --timeout 60
lab_expect_ok "dmsetup rename labln labln2" dmsetup rename labln labln2
waited "the waiter woke on rename" 0
lab_assert_eq "rename reported as remove + add with the raised number" \
  "added labln2 $(kevents labln2)|removed labln" "$(paste -sd'|' "$LAB_OUT/rename.txt")"
waiter remove.txt events --timeout 60
lab_expect_ok "dmsetup remove labln2" dmsetup remove labln2
waited "the waiter woke on remove" 0
lab_assert_eq "remove reported" "removed labln2" "$(cat "$LAB_OUT/remove.txt")"
lab_expect_ok "dm-tables remove labev" DM remove labev
