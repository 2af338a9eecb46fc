#!/bin/bash
# 05-lab-faults: proves the lab's own fault-injection and topology helpers on the real kernel, so
# later scenarios can rely on them: path offline/running, delete a path and scan it back, remove a
# whole scsi_debug HBA and add it back, scsi_debug error injection, dm-flakey, tcm_loop with 2
# paths to one file-backed LUN (NAA WWID, ALUA). Runs without udevd (fast; nodes come from devtmpfs).
# lab-udevd: no
# lab-timeout: 240
set -u
. "$LAB_LIB"

lab_scsi_debug 2 1
set -- $(lab_sd_disks)
a=$1 b=$2
hosts=$(lab_sd_hosts)
lab_note "paths $a ($(lab_hctl "$a")) and $b ($(lab_hctl "$b")) on hosts $(echo $hosts)"

# offline / running
lab_path_offline "$a"
lab_assert_eq "$a state after offline" offline "$(lab_path_state "$a")"
lab_expect_fail "I/O on an offline path" dd if="/dev/$a" of=/dev/null bs=4096 count=1 iflag=direct
lab_path_running "$a"
lab_assert_eq "$a state after running" running "$(lab_path_state "$a")"
lab_expect_ok "I/O after running again" dd if="/dev/$a" of=/dev/null bs=4096 count=1 iflag=direct

# delete one path, then a targeted scan brings it back
hctl=$(lab_hctl "$a")
lab_path_delete "$a"
lab_wait "$hctl deleted" 20 test ! -e "/sys/bus/scsi/devices/$hctl"
lab_assert_eq "disks after delete" 1 "$(lab_sd_disks | lab_count)"
IFS=: read -r h c t l <<<"$hctl"
lab_scan_host "$h" "$c" "$t" "$l"
lab_wait_sd_disks 2 30
lab_assert_eq "disks after targeted scan" 2 "$(lab_sd_disks | lab_count)"

# remove a whole HBA, add it back (a new host number)
lab_hba_remove
lab_wait_sd_disks 1 30
lab_assert_eq "scsi_debug hosts after HBA removal" 1 "$(lab_sd_hosts | lab_count)"
lab_hba_add
lab_wait_sd_disks 2 30
lab_assert_eq "scsi_debug hosts after HBA return" 2 "$(lab_sd_hosts | lab_count)"
lab_note "hosts now $(lab_sd_hosts | tr '\n' ' ')"

# scsi_debug error injection: opts 2 = MEDIUM ERROR on reads of sectors 4660..4669
set -- $(lab_sd_disks)
lab_sd_inject 2
lab_expect_fail "read of the injected bad sector" \
  dd if="/dev/$1" of=/dev/null bs=512 skip="$LAB_SD_MEDIUM_ERR_SECTOR" count=1 iflag=direct
lab_expect_ok "read of a good sector meanwhile" dd if="/dev/$1" of=/dev/null bs=512 count=1 iflag=direct
lab_sd_inject 0 0
lab_expect_ok "read after injection is off" \
  dd if="/dev/$1" of=/dev/null bs=512 skip="$LAB_SD_MEDIUM_ERR_SECTOR" count=1 iflag=direct

# dm-flakey: up 0 s, down 60 s -> every read fails at once
lab_flakey labflaky "$1" 0 60
lab_assert_eq "dm-flakey node" yes "$(test -b /dev/mapper/labflaky && echo yes)"
lab_expect_fail "read through a failing dm-flakey" dd if=/dev/mapper/labflaky of=/dev/null bs=4096 count=1 iflag=direct
lab_expect_ok "dm-flakey removed" dmsetup remove labflaky

# tcm_loop: one 16 MiB file-backed LUN through 2 paths; both report the same NAA-6 designator
before=$(ls /sys/class/scsi_disk | lab_count)
lab_tcm_loop 2 16 lab05serial
tcm=$(for d in /sys/class/scsi_disk/*; do
  [ "$(tr -d ' ' <"$d/device/vendor")" = LIO-ORG ] && ls "$d/device/block"
done)
lab_assert_eq "tcm_loop paths" 2 "$(echo "$tcm" | lab_count)"
lab_assert_eq "scsi disks after tcm_loop" $((before + 2)) "$(ls /sys/class/scsi_disk | lab_count)"
w=$(for d in $tcm; do cat "/sys/block/$d/device/wwid"; done | sort -u)
lab_assert_eq "tcm_loop paths share one WWID" 1 "$(echo "$w" | lab_count)"
lab_assert_match "tcm_loop WWID is NAA" '^naa\.6001405' "$w"
for d in $tcm; do
  lab_expect_ok "write+read through $d" dd if=/dev/zero of="/dev/$d" bs=4096 count=4 oflag=direct
done
lab_assert_match "ALUA state of a tcm_loop path" 'active/optimized' "$(cat /sys/block/$(echo $tcm | awk '{print $1}')/device/access_state)"

# teardown leaves nothing behind
lab_teardown_all
lab_assert_eq "scsi disks after teardown" 0 "$(ls /sys/class/scsi_disk | lab_count)"
lab_assert_eq "dm maps after teardown" "" "$(dmsetup ls | grep -v 'No devices found')"
