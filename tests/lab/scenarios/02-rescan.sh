#!/bin/bash
# 02-rescan: 2 hosts x 4 LUNs, then scsi_debug's max_luns raised to 6 (no kernel scan). A
# `lun-scan rescan --json` must report exactly the 4 new paths (LUNs 4 and 5 through both hosts)
# and nothing removed; a second rescan must report nothing new.
# lab-udevd: yes
# lab-timeout: 300
set -u
. "$LAB_LIB"

lab_scsi_debug 2 4
hosts=$(lab_sd_hosts)
lab_sd_add_luns 6 --no-scan
lab_assert_eq "disks before the rescan" 8 "$(lab_sd_disks | lab_count)"

lab_capture rescan.json "$LAB_BIN/lun-scan" rescan --json || lab_fail "lun-scan rescan --json failed"
jq -e . "$LAB_OUT/rescan.json" >/dev/null || lab_fail "lun-scan rescan --json did not print JSON"
lab_settle
lab_wait_sd_disks 12 60

# Entries of added/removed may be path objects (hctl) or plain H:C:T:L strings.
hctls='map(if type == "object" then .hctl else . end) | sort | join(" ")'
want=""
for h in $hosts; do want="$want $h:0:0:4 $h:0:0:5"; done
want=$(echo $want | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')
lab_assert_eq "paths added by the rescan" "$want" "$(jq -r ".added // [] | $hctls" "$LAB_OUT/rescan.json")"
lab_assert_eq "paths removed by the rescan" "" "$(jq -r ".removed // [] | $hctls" "$LAB_OUT/rescan.json")"

# The new paths are real: the kernel has them and udev gives both paths of a LUN one ID_SERIAL.
for h in $hosts; do
  for l in 4 5; do
    lab_wait "disk $h:0:0:$l" 30 test -d "/sys/bus/scsi/devices/$h:0:0:$l/block"
  done
done
lab_assert_eq "disks after the rescan" 12 "$(lab_sd_disks | lab_count)"

lab_capture rescan-again.json "$LAB_BIN/lun-scan" rescan --json || lab_fail "second lun-scan rescan failed"
lab_assert_eq "paths added by a second rescan" "" "$(jq -r ".added // [] | $hctls" "$LAB_OUT/rescan-again.json")"
lab_assert_eq "paths removed by a second rescan" "" "$(jq -r ".removed // [] | $hctls" "$LAB_OUT/rescan-again.json")"
