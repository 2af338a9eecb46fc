#!/bin/bash
# 31-dm-noudev: the dm-tables kernel backend WITHOUT udevd: /dev/mapper/<name> made by dm-tables
# itself (the symlink to ../dm-N that udev's rules would make) and removed with the map, the kernel's normalised table vs our reload plan, dm event
# waiting, fail_if_no_path, refused messages, rename, deferred remove on last close.
# lab-udevd: no
# lab-timeout: 240
set -u
. "$LAB_LIB"

norm() { tr -s ' \t' ' ' | sed 's/^ //; s/ $//'; }
DM() { "$LAB_BIN/dm-tables" --backend kernel "$@"; }
devno_of_node() { printf '%d:%d' "0x$(stat -L -c %t "$1")" "0x$(stat -L -c %T "$1")"; }
# exists, or is a (dangling) symlink
present() { [ -e "$1" ] || [ -L "$1" ]; }
kdevno() { dmsetup info -c --noheadings -o major,minor --separator : "$1" | norm; }
kevents() { dmsetup info -c --noheadings -o events "$1" | norm; }

lab_scsi_debug 2 1
set -- $(lab_sd_disks)
p1=$(lab_devno "$1") p2=$(lab_devno "$2")
sectors=$(lab_sectors "$1")
name=labnu
# what multipath-tools would load: service-time with one per-path arg
table="0 $sectors multipath 1 queue_if_no_path 1 alua 1 1 service-time 0 2 1 $p1 1 $p2 1"
kernel_table="0 $sectors multipath 1 queue_if_no_path 1 alua 1 1 service-time 0 2 2 $p1 1 1 $p2 1 1"

lab_expect_ok "dm-tables create without udevd" DM create "$name" --uuid mpath-lab-noudev --table "$table"
lab_assert_eq "no udevd running" 1 "$(lab_udevd_running && echo 0 || echo 1)"
[ -b "/dev/mapper/$name" ] || lab_fail "/dev/mapper/$name was not created"
lab_assert_eq "node has the map's device number" "$(kdevno "$name")" "$(devno_of_node "/dev/mapper/$name")"
lab_assert_eq "node is the link udev's rules would make" "../dm-$(kdevno "$name" | cut -d: -f2)" "$(readlink "/dev/mapper/$name")"
lab_assert_eq "kernel prints the normalised table" "$kernel_table" "$(dmsetup table "$name" | norm)"
lab_expect_ok "I/O through our node" dd if="/dev/mapper/$name" of=/dev/null bs=4096 count=16 iflag=direct

# the plan treats the kernel's normalised table as equal to what we loaded
lab_capture diff.txt DM diff "$(dmsetup table "$name")" "$table" || lab_fail "dm-tables diff failed"
lab_assert_eq "plan: loaded vs desired" "no changes|reload needed: no" "$(paste -sd'|' "$LAB_OUT/diff.txt")"

# wait for a dm event while fail_path happens
ev0=$(kevents "$name")
"$LAB_BIN/dm-tables" wait "$name" --event "$ev0" --timeout 60 >"$LAB_OUT/wait.txt" 2>&1 &
waiter=$!
sleep 1
lab_expect_ok "fail_path" DM message "$name" fail_path "$p2"
wait "$waiter"
lab_assert_eq "wait exit status" 0 "$?"
lab_assert_eq "wait printed the kernel's new event number" "$(kevents "$name")" "$(norm <"$LAB_OUT/wait.txt")"
lab_capture status.json DM --json status "$name" || lab_fail "status --json failed"
lab_assert_eq "typed status: failed path" failed "$(jq -r --arg d "$p2" '.groups[0].paths[] | select(.devno == $d) | .state' "$LAB_OUT/status.json")"
lab_assert_eq "typed status: fail count" 1 "$(jq -r --arg d "$p2" '.groups[0].paths[] | select(.devno == $d) | .fail_count' "$LAB_OUT/status.json")"
lab_expect_fail "wait times out without events" DM wait "$name" --timeout 1

# messages: queueing off shows in the table, bad ones are refused with a reason
lab_expect_ok "fail_if_no_path" DM message "$name" fail_if_no_path
lab_assert_match "table after fail_if_no_path" "^0 $sectors multipath 0 1 alua " "$(DM table "$name" | norm)"
lab_expect_fail "switch_group to a group that does not exist" DM message "$name" switch_group 5
lab_expect_fail "fail_path of a device not in the map" DM message "$name" fail_path 1:3
lab_expect_ok "reinstate_path" DM message "$name" reinstate_path "$p2"

# reload refuses to drop every active path; a safe reload works
lab_expect_ok "fail_path p1" DM message "$name" fail_path "$p1"
lab_expect_fail "reload dropping the only active path" DM reload "$name" --table "0 $sectors multipath 0 1 alua 1 1 service-time 0 1 2 $p1 1 1"
lab_expect_ok "reload into two groups" DM reload "$name" --table "0 $sectors multipath 0 1 alua 2 1 service-time 0 1 2 $p1 1 1 service-time 0 1 2 $p2 1 1"
lab_assert_eq "kernel table after reload" "0 $sectors multipath 0 1 alua 2 1 service-time 0 1 2 $p1 1 1 service-time 0 1 2 $p2 1 1" "$(dmsetup table "$name" | norm)"

# rename moves our node
lab_expect_ok "rename" DM rename "$name" "${name}2"
name="${name}2"
[ -b "/dev/mapper/$name" ] || lab_fail "/dev/mapper/$name missing after rename"
present /dev/mapper/labnu && lab_fail "/dev/mapper/labnu still there after rename"

# deferred remove: the kernel removes the map at the last close; the stale node is swept later
exec 3<"/dev/mapper/$name"
lab_expect_fail "remove while open" DM remove "$name"
lab_capture deferred.txt DM remove "$name" --deferred || lab_fail "deferred remove failed"
lab_assert_match "deferred remove says so" "will be removed" "$(cat "$LAB_OUT/deferred.txt")"
lab_expect_ok "map still there while open" dmsetup info "$name"
exec 3<&-
lab_wait "kernel to complete the deferred remove" 20 sh -c "! dmsetup info $name >/dev/null 2>&1"
lab_expect_ok "create another map (sweeps stale nodes)" DM create labnu3 --table "$kernel_table"
present "/dev/mapper/$name" && lab_fail "stale /dev/mapper/$name was not swept"
lab_expect_ok "remove" DM remove labnu3
present /dev/mapper/labnu3 && lab_fail "/dev/mapper/labnu3 not removed with the map"
lab_expect_fail "map gone" dmsetup info labnu3
exit 0
