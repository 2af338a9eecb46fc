#!/bin/bash
# 03-dm-kernel: the dm-tables kernel backend on a real device-mapper, over one LUN's two paths
# (2 hosts x 1 LUN): create, ls, table, status, fail_path, reinstate_path, remove refused while
# the map is held open, remove. Every step is checked against `dmsetup` (the kernel's own view).
# lab-udevd: yes
# lab-timeout: 240
set -u
. "$LAB_LIB"

norm() { tr -s ' \t' ' ' | sed 's/^ //; s/ $//'; }
DM() { "$LAB_BIN/dm-tables" --backend kernel "$@"; }

lab_scsi_debug 2 1
set -- $(lab_sd_disks)
p1=$(lab_devno "$1") p2=$(lab_devno "$2")
wwid=$(lab_udev_serial "$1")
lab_assert_eq "both paths carry one WWID" "$wwid" "$(lab_udev_serial "$2")"
sectors=$(lab_sectors "$1")
name=labmp
uuid="mpath-$wwid"
table="0 $sectors multipath 0 1 alua 1 1 round-robin 0 2 1 $p1 1 $p2 1"
lab_note "map $name over $1 ($p1) and $2 ($p2), uuid $uuid"

# create
lab_expect_ok "dm-tables create" DM create "$name" --uuid "$uuid" --table "$table"
lab_settle
lab_wait "/dev/mapper/$name" 20 test -b "/dev/mapper/$name"
lab_assert_eq "kernel table after create" "$(echo "$table" | norm)" "$(dmsetup table "$name" | norm)"
lab_assert_eq "kernel uuid after create" "$uuid" "$(dmsetup info -c --noheadings -o uuid "$name" | norm)"
lab_expect_ok "I/O through the map" dd if="/dev/mapper/$name" of=/dev/null bs=4096 count=16 iflag=direct

# ls, table, status through dm-tables agree with dmsetup
lab_capture ls.txt DM ls || lab_fail "dm-tables ls failed"
grep -qw "$name" "$LAB_OUT/ls.txt" || lab_fail "dm-tables ls does not list $name"
lab_capture table.txt DM table "$name" || lab_fail "dm-tables table failed"
lab_assert_eq "dm-tables table = dmsetup table" "$(dmsetup table "$name" | norm)" \
  "$(grep -m1 ' multipath ' "$LAB_OUT/table.txt" | sed "s/^$name: //" | norm)"
lab_capture status.txt DM status "$name" || lab_fail "dm-tables status failed"
kstatus=$(dmsetup status "$name" | norm)
lab_assert_match "kernel status: both paths active" " $p1 A 0( .*)? $p2 A 0( |$)" "$kstatus"
lab_assert_eq "dm-tables status = dmsetup status" "$kstatus" \
  "$(grep -m1 ' multipath ' "$LAB_OUT/status.txt" | sed "s/^$name: //" | norm)"

# fail_path, then reinstate_path
lab_expect_ok "dm-tables message fail_path" DM message "$name" fail_path "$p1"
kstatus=$(dmsetup status "$name" | norm)
lab_assert_match "kernel status after fail_path" " $p1 F 1( |$)" "$kstatus"
lab_capture status-failed.txt DM status "$name" || lab_fail "dm-tables status failed"
lab_assert_eq "dm-tables status after fail_path = dmsetup status" "$kstatus" \
  "$(grep -m1 ' multipath ' "$LAB_OUT/status-failed.txt" | sed "s/^$name: //" | norm)"
lab_expect_ok "I/O through the surviving path" dd if="/dev/mapper/$name" of=/dev/null bs=4096 count=16 iflag=direct
lab_expect_ok "dm-tables message reinstate_path" DM message "$name" reinstate_path "$p1"
lab_assert_match "kernel status after reinstate_path" " $p1 A 1( .*)? $p2 A 0( |$)" "$(dmsetup status "$name" | norm)"

# remove is refused while the map is open, and the map survives the attempt. The path messages
# above raised dm events, so udevd's blkid probe may hold the map open for a moment: let it
# finish first, or the open count below counts it too (seen in CI: 2 instead of 1).
lab_settle
open_count() { dmsetup info -c --noheadings -o open "$name" | norm; }
map_unheld() { [ "$(open_count)" = 0 ]; }
lab_wait "nobody else holding /dev/mapper/$name open" 20 map_unheld
exec 3<"/dev/mapper/$name"
lab_assert_eq "open count while held" 1 "$(open_count)"
lab_expect_fail "dm-tables remove while open" DM remove "$name"
lab_assert_eq "map still there after the refused remove" "$(echo "$table" | norm)" "$(dmsetup table "$name" | norm)"
exec 3<&-

# remove
lab_expect_ok "dm-tables remove" DM remove "$name"
lab_settle
lab_expect_fail "map gone from the kernel" dmsetup info "$name"
lab_wait "/dev/mapper/$name to disappear" 20 test ! -e "/dev/mapper/$name"
