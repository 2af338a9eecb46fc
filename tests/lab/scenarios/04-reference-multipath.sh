#!/bin/bash
# 04-reference-multipath: multipath-tools (the reference) builds its maps on 2 hosts x 4 LUNs.
# Its `multipath -v2`, `multipath -ll`, `dmsetup table`, `dmsetup status`, bindings and the udev
# view of every path are kept as artifacts for side-by-side comparison; the maps are removed after.
# lab-udevd: yes
# lab-timeout: 240
set -u
. "$LAB_LIB"

lab_scsi_debug 2 4
disks=$(lab_sd_disks)

# Udev's view of every path: name, major:minor, H:C:T:L, ID_SERIAL (multipath-tools' WWID).
for d in $disks; do
  printf '%s %s %s %s\n' "$d" "$(lab_devno "$d")" "$(lab_hctl "$d")" "$(lab_udev_serial "$d")"
done >"$LAB_OUT/paths.txt"
lab_note "paths: $(tr '\n' ';' <"$LAB_OUT/paths.txt")"

# Guest-local configuration on the tmpfs overlay (the host's /etc is never touched).
cat >/etc/multipath.conf <<'CONF'
defaults {
	user_friendly_names yes
	find_multipaths no
}
CONF
cp /etc/multipath.conf "$LAB_OUT/multipath.conf"
rm -f /etc/multipath/bindings /etc/multipath/wwids

lab_capture multipath-v2.txt multipath -v2 || lab_fail "multipath -v2 failed"
lab_settle
lab_capture multipath-ll.txt multipath -ll || lab_fail "multipath -ll failed"
lab_capture dmsetup-table.txt dmsetup table --target multipath || lab_fail "dmsetup table failed"
lab_capture dmsetup-status.txt dmsetup status --target multipath || lab_fail "dmsetup status failed"
lab_capture dmsetup-info.txt dmsetup info -c -o name,uuid,major,minor,open,segments,events
cp /etc/multipath/bindings "$LAB_OUT/bindings" 2>/dev/null || true
multipath -V >"$LAB_OUT/multipath-version.txt" 2>&1 || dpkg-query -W multipath-tools >"$LAB_OUT/multipath-version.txt"

# What the reference must have produced: one map per LUN, two paths each, named by WWID.
lab_assert_eq "multipath maps" 4 "$(grep -c ': 0 [0-9]* multipath ' "$LAB_OUT/dmsetup-table.txt")"
lab_assert_eq "map names" "mpatha mpathb mpathc mpathd" \
  "$(awk -F: '{ print $1 }' "$LAB_OUT/dmsetup-table.txt" | sort | tr '\n' ' ' | sed 's/ $//')"
for serial in $(awk '{ print $4 }' "$LAB_OUT/paths.txt" | sort -u); do
  name=$(dmsetup info -c --noheadings -o name,uuid --separator ' ' | awk -v u="mpath-$serial" '$2 == u { print $1 }')
  [ -n "$name" ] || lab_fail "no map has uuid mpath-$serial"
  want=$(awk -v s="$serial" '$4 == s { print $2 }' "$LAB_OUT/paths.txt" | sort | tr '\n' ' ')
  got=$(dmsetup table "$name" | grep -oE '[0-9]+:[0-9]+' | sort | tr '\n' ' ')
  lab_assert_eq "paths of $name (mpath-$serial)" "$want" "$got"
  lab_assert_match "$name hardware handler" ' 1 alua ' "$(dmsetup table "$name")"
  lab_assert_match "$name path states" '^0 [0-9]+ multipath .* A .* A ' "$(dmsetup status "$name")"
done

# Clean up: the reference's maps must go away so later scenarios start from nothing.
lab_expect_ok "multipath -F flushes the maps" multipath -F
lab_settle
lab_assert_eq "multipath maps after flush" 0 "$(dmsetup table --target multipath 2>/dev/null | grep -c ' multipath ')"
rm -f /etc/multipath.conf
