#!/bin/bash
# 41-two-hosts-shared-lun: two hosts, one SAN (issue 13). Runs on the machine that runs the lab
# and drives host A and host B (tests/lab/hosts.sh). Both hosts see the same 4 data LUNs and the
# lock LUN through 2 paths each: lun-scan on both lists identical WWIDs (= udev's ID_SERIAL =
# the NAA WWN the lab gave each LUN), each LUN once per controller, with a different sdX order
# on each host. Each host's multipathd-rs builds its maps. A block written with O_DIRECT through
# A's map reads back identical through B's map (and B's write through A's); controls: before the
# write and on another LUN the same read does not match. With one of A's paths to lun0 offline
# under I/O, A's map fails that path and A's I/O continues without error, while B (I/O on the
# same LUN through its own map) keeps every path active and sees no error; control: a path of
# B offlined is seen by the same check. Then the guest network: etcd on A, reached from B.
# lab-timeout: 1500
set -u
. "$LAB_HOSTS_LIB"

LUNS="lun0 lun1 lun2 lun3 lock"
# One vCPU per host, shared with the other guest, on a loaded machine: an I/O iteration (five
# processes) can take 10 s. Few iterations, generous waits.
LAB_IO_PROGRESS_TIMEOUT=300 LAB_ON_ENV=LAB_IO_PROGRESS_TIMEOUT

# ------------------------------------------------------------------ the SAN as each kernel sees it
for h in A B; do
  on "$h" san_map >"$LAB_OUT/$h/san-map.txt" || lab_fail "san_map on $h failed"
  lab_note "host $h paths (dev hctl ctrl lun devno state): $(tr '\n' ';' <"$LAB_OUT/$h/san-map.txt")"
  lab_assert_eq "host $h: SAN paths" 10 "$(lab_count <"$LAB_OUT/$h/san-map.txt")"
  for l in $LUNS; do
    lab_assert_eq "host $h: $l paths, one per controller" "c0 c1" \
      "$(awk -v l="$l" '$4 == l { print $3 }' "$LAB_OUT/$h/san-map.txt" | sort | tr '\n' ' ' | sed 's/ $//')"
  done
done
# Discovery order differs: the same sdX names are different LUNs on A and B.
order_a=$(awk '{ print $1 "=" $4 }' "$LAB_OUT/A/san-map.txt" | sort -V | tr '\n' ' ')
order_b=$(awk '{ print $1 "=" $4 }' "$LAB_OUT/B/san-map.txt" | sort -V | tr '\n' ' ')
lab_note "sdX -> LUN on A: $order_a"
lab_note "sdX -> LUN on B: $order_b"
[ "$order_a" != "$order_b" ] || lab_fail "A and B name their paths alike ($order_a): the lab must make discovery orders differ"
printf 'ok: sdX -> LUN differs between A and B\n' | tee -a "$LAB_EVIDENCE"

# ------------------------------------------------------------------ lun-scan on both: the same WWIDs
paths_jq='if type == "array" then . else .paths end | map(select((.model // "") | test("QEMU HARDDISK")))'
for h in A B; do
  on "$h" 'lun-scan list --json' >"$LAB_OUT/$h/lun-scan-list.json" || lab_fail "lun-scan list --json failed on $h"
  on "$h" 'lun-scan list' >"$LAB_OUT/$h/lun-scan-list.txt"
  jq -r "$paths_jq | .[] | \"\(.dev) \(.wwid) \(.wwid_source)\"" "$LAB_OUT/$h/lun-scan-list.json" | sort -V \
    >"$LAB_OUT/$h/lun-scan-wwids.txt"
  lab_assert_eq "host $h: lun-scan lists the SAN paths" 10 "$(lab_count <"$LAB_OUT/$h/lun-scan-wwids.txt")"
  lab_assert_eq "host $h: distinct WWIDs" 5 "$(awk '{ print $2 }' "$LAB_OUT/$h/lun-scan-wwids.txt" | sort -u | lab_count)"
  # Oracles: udev's ID_SERIAL and the WWN the lab gave the LUN behind each path (kernel wwid).
  on "$h" 'for d in $(san_disks); do echo "$d $(lab_udev_serial "$d") $(san_udev_wwid "$(san_lun_of "$d")")"; done' \
    | sort -V >"$LAB_OUT/$h/udev-wwids.txt"
  while read -r dev serial lab_wwid; do
    lab_assert_eq "host $h: $dev udev ID_SERIAL = 3 + the LUN's NAA WWN" "$lab_wwid" "$serial"
    lab_assert_eq "host $h: $dev lun-scan WWID = udev ID_SERIAL" "$serial" \
      "$(awk -v d="$dev" '$1 == d { print $2 }' "$LAB_OUT/$h/lun-scan-wwids.txt")"
  done <"$LAB_OUT/$h/udev-wwids.txt"
  # What the WWID is computed from, kept for the record: VPD 0x83 as sg_vpd decodes it.
  on "$h" 'd=$(san_lun_paths lun0 | head -n1); echo "# /dev/$d"; sg_vpd -p di "/dev/$d"; cat "/sys/block/$d/device/wwid"' \
    >"$LAB_OUT/$h/vpd83-lun0.txt" 2>&1
done
wwids_a=$(awk '{ print $2 }' "$LAB_OUT/A/lun-scan-wwids.txt" | sort -u | tr '\n' ' ')
wwids_b=$(awk '{ print $2 }' "$LAB_OUT/B/lun-scan-wwids.txt" | sort -u | tr '\n' ' ')
lab_assert_eq "the same WWIDs on A and B (lun-scan)" "$wwids_a" "$wwids_b"
for w in $wwids_a; do
  lab_assert_eq "WWID $w: 2 paths on A" 2 "$(awk -v w="$w" '$2 == w' "$LAB_OUT/A/lun-scan-wwids.txt" | lab_count)"
  lab_assert_eq "WWID $w: 2 paths on B" 2 "$(awk -v w="$w" '$2 == w' "$LAB_OUT/B/lun-scan-wwids.txt" | lab_count)"
done

# ------------------------------------------------------------------ each host's daemon builds its maps
on_ok "multipathd-rs started on A" A san_mpd_start >/dev/null
on_ok "multipathd-rs started on B" B san_mpd_start >/dev/null
for h in A B; do
  on "$h" --timeout 120 'lab_poll 90 lab_is 5 lab_mpath_count' \
    || { on "$h" 'dmsetup ls; tail -n 30 mpd.log'; lab_fail "host $h: the daemon did not build 5 maps within 90 s"; }
  on "$h" lab_settle
  on "$h" 'dmsetup table --target multipath' >"$LAB_OUT/$h/dmsetup-table.txt"
  on "$h" 'lab_mpd show topology' >"$LAB_OUT/$h/show-topology.txt"
  # One job per host (each job costs a second or two under emulation): per LUN its WWID, the
  # map with uuid mpath-WWID, the LUN's paths by the kernel's wwid, the map's paths by its table,
  # how many are active in dmsetup status, whether /dev/mapper/MAP is a block device (0).
  on "$h" --timeout 150 "for l in $LUNS; do"' w=$(san_udev_wwid $l); m=$(lab_mpath_of_wwid $w)
      lab_poll 15 test -b "/dev/mapper/${m:-none}"; node=$?
      kp=$(for d in $(san_lun_paths $l); do san_devno $d; done | sort | tr "\n" , | sed "s/,$//")
      echo "$l $w ${m:--} ${kp:--} $(lab_map_devnos "$m" | tr " " ,) $(dmsetup status "$m" | grep -oE "[0-9]+:[0-9]+ A" | lab_count) $node"
    done' >"$LAB_OUT/$h/maps.txt" || lab_fail "host $h: listing the maps failed"
  while read -r l w m kp mp act node; do
    [ "$m" != - ] || lab_fail "host $h: no map with uuid mpath-$w ($l)"
    lab_assert_eq "host $h: the map of $l ($m) holds this host's 2 paths to $l" "$kp" "$mp"
    lab_assert_eq "host $h: paths of $m active in dm" 2 "$act"
    lab_assert_eq "host $h: /dev/mapper/$m is a block device" 0 "$node"
  done <"$LAB_OUT/$h/maps.txt"
  lab_assert_eq "host $h: maps checked" 5 "$(lab_count <"$LAB_OUT/$h/maps.txt")"
done
map_of() { awk -v l="$2" '$1 == l { print $3 }' "$LAB_OUT/$1/maps.txt"; }
lab_note "maps on A: $(tr '\n' ';' <"$LAB_OUT/A/maps.txt")"
lab_note "maps on B: $(tr '\n' ';' <"$LAB_OUT/B/maps.txt") (per-host names: they may differ, hostsync's job)"

# ------------------------------------------------------------------ one SAN: A writes, B reads
bs=65536 blk=100 # 6.25 MiB into the LUN
head -c "$bs" /dev/urandom >"$LAB_OUT/pattern-a.bin"
head -c "$bs" /dev/urandom >"$LAB_OUT/pattern-b.bin"
a1=$(map_of A lun1) b1=$(map_of B lun1) a2=$(map_of A lun2) b2=$(map_of B lun2)
readb() { # HOST MAP FILE: read block $blk of /dev/mapper/MAP with O_DIRECT into $LAB_OUT/HOST/FILE
  on "$1" "dd if=/dev/mapper/$2 of=$3 bs=$bs skip=$blk count=1 iflag=direct status=none"
}
readb B "$b1" before.bin || lab_fail "B cannot read $b1"
lab_expect_fail "positive control: before A's write, B's $b1 block $blk differs from the pattern" \
  cmp -s "$LAB_OUT/pattern-a.bin" "$LAB_OUT/B/before.bin"
on_ok "A writes the pattern through its map $a1 (lun1), O_DIRECT" A \
  "dd if=\$LAB_SHARED/pattern-a.bin of=/dev/mapper/$a1 bs=$bs seek=$blk count=1 oflag=direct status=none"
readb B "$b1" after.bin || lab_fail "B cannot read $b1"
lab_expect_ok "B reads A's block back identical through its own map $b1 (lun1)" \
  cmp "$LAB_OUT/pattern-a.bin" "$LAB_OUT/B/after.bin"
readb B "$b2" other-lun.bin || lab_fail "B cannot read $b2"
lab_expect_fail "positive control: the same block of another LUN (lun2, $b2) on B differs" \
  cmp -s "$LAB_OUT/pattern-a.bin" "$LAB_OUT/B/other-lun.bin"
on_ok "B writes another pattern through its map $b2 (lun2), O_DIRECT" B \
  "dd if=\$LAB_SHARED/pattern-b.bin of=/dev/mapper/$b2 bs=$bs seek=$blk count=1 oflag=direct status=none"
readb A "$a2" from-b.bin || lab_fail "A cannot read $a2"
lab_expect_ok "A reads B's block back identical through its own map $a2 (lun2)" \
  cmp "$LAB_OUT/pattern-b.bin" "$LAB_OUT/A/from-b.bin"

# ------------------------------------------------------------------ A loses a path under I/O; B does not care
a0=$(map_of A lun0) b0=$(map_of B lun0)
# A: I/O on the first 16 MiB of lun0 through its map. B: I/O on the same LUN through its own map,
# 512 MiB further (a dm-linear window over B's map), so the two never touch the same blocks.
on_ok "A: I/O loop on $a0 (lun0, first 16 MiB)" A --timeout 300 "lab_io_start /dev/mapper/$a0 16777216" >/dev/null
on_ok "B: a 16 MiB window of its lun0 map at 512 MiB" B \
  "dmsetup create lab-b-window --table '0 32768 linear /dev/mapper/$b0 1048576' && lab_dm_node lab-b-window"
on_ok "B: I/O loop on lun0 (its map $b0, through the window)" B --timeout 300 "lab_io_start /dev/mapper/lab-b-window" >/dev/null
on_ok "A: I/O runs" A --timeout 360 'lab_io_progress 3 "before the fault on A"'
on_ok "B: I/O runs" B --timeout 360 'lab_io_progress 3 "before the fault on A"'
b_failed_before=$(on B 'san_dm_paths_in F')
lab_assert_eq "B: paths failed in dm before the fault" 0 "$b_failed_before"

pa=$(on A 'san_lun_paths lun0 | head -n1')
pa_devno=$(on A "lab_devno $pa")
on_ok "A: path $pa ($pa_devno) of lun0 offline" A "san_path_offline $pa" >/dev/null
on A --timeout 120 "lab_poll 90 lab_is F lab_dm_path_state $a0 $pa_devno" \
  || lab_fail "A's map $a0 did not fail $pa ($pa_devno) within 90 s"
lab_assert_eq "A: $pa failed in $a0 (dmsetup status)" F "$(on A "lab_dm_path_state $a0 $pa_devno")"
on_ok "A: I/O continues on the other path, no error" A --timeout 360 'lab_io_progress 3 "with one path offline"'
on A "lab_mpd show topology" >"$LAB_OUT/A/show-topology-fault.txt"
# B: not affected. Its kernel's view (every SAN path running, no path failed in any map) and its
# daemon's (every path checked ready), and its I/O on the same LUN.
on_ok "B: I/O on lun0 continues, no error" B --timeout 360 'lab_io_progress 3 "while A has a path offline"'
lab_assert_eq "B: SAN paths not running" "" "$(on B san_offline_paths)"
lab_assert_eq "B: paths failed in dm while A has a path offline" 0 "$(on B 'san_dm_paths_in F')"
lab_assert_eq "B: paths active in dm" 10 "$(on B 'san_dm_paths_in A')"
on B 'lab_mpd show paths --json' >"$LAB_OUT/B/show-paths-during-a-fault.json"
lab_assert_eq "B: its daemon sees every path ready" 10 \
  "$(jq '[.paths[] | select(.chk_state == "ready")] | length' "$LAB_OUT/B/show-paths-during-a-fault.json")"
# Positive control: the same checks do see B's own fault (a path of lun1 offline on B).
pb=$(on B 'san_lun_paths lun1 | head -n1')
on_ok "control: B: path $pb of lun1 offline" B "san_path_offline $pb" >/dev/null
on B --timeout 120 "lab_poll 90 lab_is 1 san_dm_paths_in F" || lab_fail "control: B's map never failed $pb"
lab_assert_eq "control: B's offline path is seen (san_offline_paths)" "$pb" "$(on B san_offline_paths)"
lab_assert_eq "control: B's failed path is seen (dm)" 1 "$(on B 'san_dm_paths_in F')"
on B 'lab_mpd show paths --json' >"$LAB_OUT/B/show-paths-control.json"
lab_assert_eq "control: B's daemon sees one path not ready" 9 \
  "$(jq '[.paths[] | select(.chk_state == "ready")] | length' "$LAB_OUT/B/show-paths-control.json")"
lab_assert_eq "control: A is not affected by B's fault (its failed paths: still only $pa)" 1 "$(on A 'san_dm_paths_in F')"
on_ok "control: B: $pb running again" B "san_path_running $pb" >/dev/null
on B --timeout 120 "lab_poll 90 lab_is 0 san_dm_paths_in F" || lab_fail "B's daemon did not reinstate $pb within 90 s"

on_ok "A: path $pa running again" A "san_path_running $pa" >/dev/null
on A --timeout 120 "lab_poll 90 lab_is A lab_dm_path_state $a0 $pa_devno" \
  || lab_fail "A's daemon did not reinstate $pa within 90 s"
on_ok "A: I/O after the path came back" A --timeout 360 'lab_io_progress 2 "after reinstate"'
on_ok "B: I/O after A's path came back" B --timeout 360 'lab_io_progress 2 "after A reinstated"'
for h in A B; do
  on_ok "$h: I/O loop stopped" "$h" --timeout 120 lab_io_stop
  on_ok "$h: everything written reads back" "$h" --timeout 300 lab_io_verify >/dev/null
  lab_note "$h: $(on "$h" 'echo "$(lab_io_iters) I/O iterations, $(lab_io_errors) errors"')"
done
on_ok "B: window removed" B 'dmsetup remove lab-b-window'

# ------------------------------------------------------------------ the guest network: etcd on A, from B
on_ok "A: ping B over the guest network" A 'busybox ping -c 2 -W 3 "$LAB_PEER_IP"' >/dev/null
on_ok "A: etcd started (clients on 10.99.0.1:2379)" A --timeout 120 san_etcd_start >/dev/null
on_ok "B: puts a key into A's etcd over the guest network" B \
  'san_etcdctl --endpoints "$(san_etcd_url "$LAB_PEER_IP")" put /lab/41 "from-$LAB_HOST"' >/dev/null
lab_assert_eq "A reads B's key from its own etcd" "from-B" \
  "$(on A 'san_etcdctl --endpoints "$(san_etcd_url)" get --print-value-only /lab/41')"
on_fails "control: B cannot reach an etcd where none runs (its own address)" B \
  'san_etcdctl --endpoints "$(san_etcd_url)" get /lab/41'
