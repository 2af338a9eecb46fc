#!/bin/bash
# 42-two-hosts-aliases: one name per LUN on every host (issue 14). Both hosts' multipathd-rs
# daemons, configured with [cluster] registry = an etcd running in the lab (one member on A,
# clients on the guest-only network; B reaches it over that network), name the same 4 LUNs
# identically although they discovered them in a different order: A finds lun0..lun3 in one
# scan, B finds lun3 first and lun0..lun2 later (their paths deleted through sysfs before its
# daemon starts, then scanned back). Positive control: the same discovery without the registry
# gives different per-host names. Then the fifth LUN (`lock`, its paths deleted on both hosts
# before the daemons start) is scanned in on both hosts at the same moment: it gets one name on
# both. `hostsync check aliases` is clean from either host, and flags a mismatch made by hand
# (a map renamed with dmsetup on B: non-zero exit), clean again once it is undone.
# lab-timeout: 1200
set -u
. "$LAB_HOSTS_LIB"

DATA="lun0 lun1 lun2 lun3"
LATE_B="lun0 lun1 lun2" # B discovers these after lun3

# gone HOST NAME LUN...: on HOST, remember the H C T L of every path of each LUN in
# $LAB_OUT/HOST/NAME.hctl (guest: ./NAME.hctl), then delete those paths through sysfs.
gone() {
  local h="$1" name="$2"
  shift 2
  on "$h" "for l in $*; do for d in \$(san_lun_paths \$l); do lab_hctl \$d | tr ':' ' '; done; done >$name.hctl
           for l in $*; do san_lun_gone \$l; done; cat $name.hctl" >/dev/null || lab_fail "$h: cannot delete the paths of $*"
  lab_assert_eq "$h: paths of $* deleted" 0 \
    "$(on "$h" "for l in $*; do san_lun_paths \$l; done | lab_count")"
}
# back HOST NAME: scan back the paths remembered by `gone HOST NAME` (exactly those H:C:T:L).
back() {
  on "$1" "while read -r h c t l; do lab_scan_host \$h \"\$c \$t \$l\"; done <$2.hctl; lab_settle"
}
# names HOST: `LUN WWID MAP` for the data LUNs and lock, as this host's maps show them.
names() {
  on "$1" 'for l in lun0 lun1 lun2 lun3 lock; do w=$(san_udev_wwid $l); echo "$l $w $(lab_mpath_of_wwid $w)"; done'
}
wait_maps() { # HOST N
  on "$1" --timeout 150 "lab_poll 120 lab_is $2 lab_mpath_count" \
    || { on "$1" 'dmsetup ls; tail -n 40 mpd.log'; lab_fail "host $1: the daemon did not reach $2 maps within 120 s"; }
}
reset_daemons() {
  for h in A B; do
    on "$h" 'san_service_stop mpd; lab_dm_remove_all; rm -rf "$LAB_MPD_DIR"; mkdir -p "$LAB_MPD_DIR"' >/dev/null
  done
}

# ------------------------------------------------------------------ the same LUNs on both hosts
for h in A B; do
  on "$h" san_map >"$LAB_OUT/$h/san-map.txt" || lab_fail "san_map on $h failed"
  lab_assert_eq "host $h: SAN paths" 10 "$(lab_count <"$LAB_OUT/$h/san-map.txt")"
done
wwids_a=$(on A 'for l in lun0 lun1 lun2 lun3 lock; do san_udev_wwid $l; done' | tr '\n' ' ')
wwids_b=$(on B 'for l in lun0 lun1 lun2 lun3 lock; do san_udev_wwid $l; done' | tr '\n' ' ')
lab_assert_eq "the 5 LUNs have the same WWIDs on A and B" "$wwids_a" "$wwids_b"

# ------------------------------------------------------------------ positive control: no registry
reset_daemons
gone A lock lock
gone B lock lock
gone B late $LATE_B
on_both san_mpd_start >/dev/null || lab_fail "the daemons did not start"
wait_maps A 4
wait_maps B 1
back B late
wait_maps B 4
names A >"$LAB_OUT/A/names-no-registry.txt"
names B >"$LAB_OUT/B/names-no-registry.txt"
lab_note "no registry, A: $(tr '\n' ';' <"$LAB_OUT/A/names-no-registry.txt")"
lab_note "no registry, B: $(tr '\n' ';' <"$LAB_OUT/B/names-no-registry.txt")"
for h in A B; do grep -v '^lock' "$LAB_OUT/$h/names-no-registry.txt" >"$LAB_OUT/$h/data-names-no-registry.txt"; done
lab_expect_fail "positive control: without the registry, A and B name the data LUNs differently" \
  cmp -s "$LAB_OUT/A/data-names-no-registry.txt" "$LAB_OUT/B/data-names-no-registry.txt"

# ------------------------------------------------------------------ with the registry (etcd on A)
reset_daemons
gone B late $LATE_B
on_ok "A: etcd started on the guest network" A --timeout 120 san_etcd_start >/dev/null
ip_a=$(on A 'echo $LAB_IP')
reg="etcd://$ip_a:2379"
lab_note "registry: $reg"
for h in A B; do
  on "$h" "printf '[defaults]\nreconcile_interval = 5\n\n[cluster]\nregistry = \"%s\"\nname = \"lab42\"\nhost = \"%s\"\npublish_interval = 2\n' '$reg' \"\$LAB_HOST\" >\"\$LAB_MPD_DIR/config.toml\"
           cat \"\$LAB_MPD_DIR/config.toml\"" >"$LAB_OUT/$h/config.toml"
done
on_both san_mpd_start >/dev/null || lab_fail "the daemons did not start with [cluster]"
for h in A B; do
  lab_assert_match "host $h: show config names the registry" "$reg" "$(on "$h" 'lab_mpd show config')"
done
wait_maps A 4
wait_maps B 1
back B late
wait_maps B 4
names A >"$LAB_OUT/A/names-registry.txt"
names B >"$LAB_OUT/B/names-registry.txt"
lab_note "registry, A: $(tr '\n' ';' <"$LAB_OUT/A/names-registry.txt")"
lab_note "registry, B: $(tr '\n' ';' <"$LAB_OUT/B/names-registry.txt")"
for l in $DATA; do
  na=$(awk -v l="$l" '$1 == l { print $3 }' "$LAB_OUT/A/names-registry.txt")
  nb=$(awk -v l="$l" '$1 == l { print $3 }' "$LAB_OUT/B/names-registry.txt")
  [ -n "$na" ] || lab_fail "A has no map for $l"
  lab_assert_eq "$l has one name on A and B" "$na" "$nb"
done
lab_assert_eq "4 distinct names" 4 "$(grep -v '^lock' "$LAB_OUT/A/names-registry.txt" | awk '{ print $3 }' | sort -u | lab_count)"
want=$(awk '$1 == "lun0" { print $3 " " $2 }' "$LAB_OUT/A/names-registry.txt")
for h in A B; do
  on "$h" 'cat "$LAB_MPD_DIR/bindings.cluster"' >"$LAB_OUT/$h/bindings.cluster"
  lab_expect_ok "host $h: the local table (bindings.cluster) caches the registry's name of lun0" \
    grep -qx "$want" "$LAB_OUT/$h/bindings.cluster"
done

# ------------------------------------------------------------------ a fifth LUN on both at the same moment
on A 'while read -r h c t l; do lab_scan_host $h "$c $t $l"; done <lock.hctl' & pa=$!
on B 'while read -r h c t l; do lab_scan_host $h "$c $t $l"; done <lock.hctl' & pb=$!
wait $pa || lab_fail "A: rescan of lock failed"
wait $pb || lab_fail "B: rescan of lock failed"
wait_maps A 5
wait_maps B 5
names A >"$LAB_OUT/A/names-five.txt"
names B >"$LAB_OUT/B/names-five.txt"
la=$(awk '$1 == "lock" { print $3 }' "$LAB_OUT/A/names-five.txt")
lb=$(awk '$1 == "lock" { print $3 }' "$LAB_OUT/B/names-five.txt")
[ -n "$la" ] || lab_fail "A has no map for the fifth LUN"
lab_assert_eq "the fifth LUN, seen by both at once, has one name on A and B" "$la" "$lb"
lab_assert_eq "5 distinct names" 5 "$(awk '{ print $3 }' "$LAB_OUT/A/names-five.txt" | sort -u | lab_count)"

# ------------------------------------------------------------------ hostsync check aliases
check() { on "$1" "hostsync --registry '$reg' --host \$LAB_HOST check aliases ${2:-}"; }
for h in A B; do
  on "$h" --timeout 60 "lab_poll 30 hostsync --registry '$reg' --host \$LAB_HOST check aliases" >/dev/null \
    || { check "$h"; lab_fail "hostsync check aliases is not clean from $h"; }
  check "$h" --json >"$LAB_OUT/$h/check-aliases.json"
  printf 'ok: hostsync check aliases is clean from %s\n' "$h" | tee -a "$LAB_EVIDENCE"
done
# A mismatch made by hand: B's map of lun1 renamed with dmsetup. B's daemon keeps an existing
# name (never renames under a guest), sees it at its next reconcile (reconcile_interval = 5 above)
# and publishes what it has.
m1=$(awk '$1 == "lun1" { print $3 }' "$LAB_OUT/B/names-five.txt")
on_ok "B: $m1 renamed by hand to handmade42" B "dmsetup rename $m1 handmade42"
for h in A B; do
  on "$h" --timeout 60 "lab_poll 30 bash -c '! hostsync --registry $reg check aliases >/dev/null'" >/dev/null \
    || lab_fail "hostsync check aliases from $h did not flag B's hand-made name within 30 s"
  check "$h" >"$LAB_OUT/$h/check-mismatch.txt"; rc=$?
  [ "$rc" -ne 0 ] || lab_fail "hostsync check aliases exits 0 from $h with a mismatch"
  lab_assert_match "check from $h names the hand-made map" handmade42 "$(cat "$LAB_OUT/$h/check-mismatch.txt")"
done
on_ok "B: handmade42 renamed back to $m1" B "dmsetup rename handmade42 $m1"
on A --timeout 60 "lab_poll 30 hostsync --registry '$reg' check aliases" >/dev/null \
  || lab_fail "control: the check is not clean again once the hand-made name is undone"
printf 'ok: clean again once undone\n' | tee -a "$LAB_EVIDENCE"
