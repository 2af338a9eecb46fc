#!/bin/bash
# 46-migration-check: `hostsync migrate check` against a real target (issue 16). Both hosts'
# multipathd-rs daemons name the SAN's LUNs through an etcd on A ([cluster], as in 42) and
# publish their maps with active/total paths. From A: a domU config naming lun0 by its cluster
# alias (/dev/mapper/<alias>) passes; one naming lun0 by A's sdX name is flagged (exit 1, the
# alias named as the fix). Then B loses one of its two paths to lun0: the check warns (exit 0,
# "single active path"); B loses the other: the check fails ("no active path"). The first check
# (2 of 2 paths active) is the control that the oracle sees B's paths at all.
# lab-timeout: 900
set -u
. "$LAB_HOSTS_LIB"

wait_maps() { # HOST N
  on "$1" --timeout 150 "lab_poll 120 lab_is $2 lab_mpath_count" \
    || { on "$1" 'dmsetup ls; tail -n 40 mpd.log'; lab_fail "host $1: the daemon did not reach $2 maps within 120 s"; }
}

on_ok "A: etcd started on the guest network" A --timeout 120 san_etcd_start >/dev/null
ip_a=$(on A 'echo $LAB_IP')
reg="etcd://$ip_a:2379"
lab_note "registry: $reg"
for h in A B; do
  on "$h" "mkdir -p \"\$LAB_MPD_DIR\"; printf '[cluster]\nregistry = \"%s\"\nname = \"lab46\"\nhost = \"%s\"\npublish_interval = 2\n' '$reg' \"\$LAB_HOST\" >\"\$LAB_MPD_DIR/config.toml\"" \
    || lab_fail "$h: cannot write the daemon's configuration"
done
on_both san_mpd_start >/dev/null || lab_fail "the daemons did not start with [cluster]"
wait_maps A 5
wait_maps B 5

w0=$(on A 'san_udev_wwid lun0')
alias0=$(on A "lab_mpath_of_wwid $w0")
sd0=$(on A 'san_lun_paths lun0 | head -n 1')
[ -n "$alias0" ] && [ -n "$sd0" ] || lab_fail "A: no map or no path for lun0"
lab_note "lun0: WWID $w0, alias $alias0, A's first path $sd0"
on A "printf 'name = \"web1\"\ndisk = [ \"phy:/dev/mapper/%s,xvda,w\" ]\n' $alias0 >good.cfg
      printf 'name = \"web1\"\ndisk = [ \"phy:/dev/%s,xvda,w\" ]\n' $sd0 >sdx.cfg" || lab_fail "A: cannot write the configs"

# check CFG: A's `migrate check CFG --to B`, output in $LAB_OUT/A/check-<tag>.txt; its status.
check() {
  on A "hostsync --registry '$reg' --host A migrate check $1 --to B" >"$LAB_OUT/A/check-$2.txt" 2>&1
}
# until_check CFG TAG PATTERN WANT_RC: poll (B publishes every 2 s) until the check's output
# matches PATTERN with exit status WANT_RC.
until_check() {
  local i rc
  for i in $(seq 30); do
    check "$1" "$2"
    rc=$?
    if [ "$rc" = "$4" ] && grep -q "$3" "$LAB_OUT/A/check-$2.txt"; then
      printf 'ok: %s (exit %s after %s tries)\n' "$2" "$rc" "$i" | tee -a "$LAB_EVIDENCE"
      return 0
    fi
    sleep 2
  done
  cat "$LAB_OUT/A/check-$2.txt" >&2
  lab_fail "migrate check $2: no output matching '$3' with exit $4 within 60 s (last exit $rc)"
}

until_check good.cfg alias "$alias0 has 2 of 2 paths active on B" 0
check sdx.cfg sdx
rc=$?
[ "$rc" = 1 ] || lab_fail "migrate check of a config naming /dev/$sd0 exits $rc, not 1"
lab_assert_match "the sdX config is flagged, naming the alias" \
  "names the SCSI disk $sd0.*the LUN is /dev/mapper/$alias0 on B" "$(tr '\n' ' ' <"$LAB_OUT/A/check-sdx.txt")"

b_paths=$(on B 'san_lun_paths lun0' | tr '\n' ' ')
set -- $b_paths
[ $# = 2 ] || lab_fail "B has $# paths to lun0, not 2: $b_paths"
on_ok "B: first path of lun0 ($1) offline" B "san_path_offline $1"
until_check good.cfg one-path "single active path on B (1 of 2)" 0
on_ok "B: second path of lun0 ($2) offline" B "san_path_offline $2"
until_check good.cfg no-path "no active path on B (0 of 2)" 1
on_ok "B: paths of lun0 running again" B "san_path_running $1; san_path_running $2"
