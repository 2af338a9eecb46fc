#!/bin/bash
# 01-discovery: 2 hosts x 4 LUNs with udevd running. `lun-scan list --json` must list the 8
# scsi_debug paths (the same H:C:T:L, names and major:minor as sysfs) with 4 distinct WWIDs, and
# every path's WWID must equal udev's ID_SERIAL for that disk (what multipath-tools uses).
# lab-udevd: yes
# lab-timeout: 240
set -u
. "$LAB_LIB"

lab_scsi_debug 2 4
disks=$(lab_sd_disks)

# Udev's and the kernel's view of every path, kept as an artifact.
for d in $disks; do
  printf '%s %s %s %s\n' "$d" "$(lab_hctl "$d")" "$(lab_devno "$d")" "$(lab_udev_serial "$d")"
done >"$LAB_OUT/udev-paths.txt"

lab_capture lun-scan-list.json "$LAB_BIN/lun-scan" list --json || lab_fail "lun-scan list --json failed"
jq -e . "$LAB_OUT/lun-scan-list.json" >/dev/null || lab_fail "lun-scan list --json did not print JSON"
lab_capture lun-scan-list.txt "$LAB_BIN/lun-scan" list || lab_fail "lun-scan list failed"

# Accept a bare array (the documented contract) or an object carrying "paths".
paths='if type == "array" then . else .paths end | map(select((.model // "") == "scsi_debug"))'
jq -r "$paths | .[] | \"\(.dev) \(.hctl) \(.devno) \(.wwid)\"" "$LAB_OUT/lun-scan-list.json" \
  | sort -k2,2V >"$LAB_OUT/lun-scan-paths.txt"

lab_assert_eq "scsi_debug paths listed" 8 "$(lab_count <"$LAB_OUT/lun-scan-paths.txt")"
lab_assert_eq "distinct WWIDs" 4 "$(awk '{ print $4 }' "$LAB_OUT/lun-scan-paths.txt" | sort -u | lab_count)"
lab_assert_eq "path names" "$(echo $disks | tr ' ' '\n' | sort | tr '\n' ' ')" \
  "$(awk '{ print $1 }' "$LAB_OUT/lun-scan-paths.txt" | sort | tr '\n' ' ')"

while read -r dev hctl devno serial; do
  line=$(awk -v d="$dev" '$1 == d' "$LAB_OUT/lun-scan-paths.txt")
  [ -n "$line" ] || lab_fail "lun-scan does not list $dev"
  lab_assert_eq "$dev H:C:T:L" "$hctl" "$(echo "$line" | awk '{ print $2 }')"
  lab_assert_eq "$dev major:minor" "$devno" "$(echo "$line" | awk '{ print $3 }')"
  lab_assert_eq "$dev WWID = udev ID_SERIAL" "$serial" "$(echo "$line" | awk '{ print $4 }')"
done <"$LAB_OUT/udev-paths.txt"

# Every path is reported running with a size and a WWID source (recorded, not guessed).
jq -r "$paths | .[] | \"\(.dev) state=\(.state) size=\(.size_bytes) source=\(.wwid_source) access=\(.access_state)\"" \
  "$LAB_OUT/lun-scan-list.json" | tee -a "$LAB_EVIDENCE"
lab_assert_eq "paths in state running" 8 \
  "$(jq "$paths | map(select(.state == \"running\")) | length" "$LAB_OUT/lun-scan-list.json")"
lab_assert_eq "paths of 8 MiB" 8 \
  "$(jq "$paths | map(select(.size_bytes == 8388608)) | length" "$LAB_OUT/lun-scan-list.json")"
