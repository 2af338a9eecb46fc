#!/bin/bash
# 06-daemon-maps: multipathd-rs builds the maps on the real kernel (issue 6, lab items).
# scsi_debug 2 hosts x 4 LUNs. multipath-tools runs first as the reference (`multipath -v2` with
# find_multipaths no + user_friendly_names; its `multipath -ll`, `dmsetup table` and path
# membership are kept), its maps are flushed, then `multipathd-rs daemon` (kernel backend, a
# config, alias table and a copy of multipath-tools' bindings under a temp dir) must build 4
# maps with /dev/mapper/<alias> nodes, the same paths per WWID (and, through the bindings file,
# the same names) as multipath-tools; `show topology`, `show maps --json`, `show paths --json`
# answer through the socket; `once --dry-run --json` on the live kernel plans `keep` for all.
# Then SIGTERM (maps stay), restart: the daemon adopts the maps with no table reload. Oracles
# for "no reload, no suspend": each map's dm event number, attr (live/inactive/suspended) and
# table are unchanged, and the kernel sent no `change` uevent for any dm device without
# DM_ACTION (a resume, hence any reload or suspend/resume, sends one; path events carry
# DM_ACTION=PATH_FAILED/PATH_REINSTATED) and no dm add/remove; a suspend+resume done by hand
# first proves the monitor sees resumes (so the oracle is not blind).
# lab-udevd: yes
# lab-timeout: 420
set -u
. "$LAB_LIB"
trap lab_mpd_cleanup EXIT

lab_scsi_debug 2 4
disks=$(lab_sd_disks)
for d in $disks; do
  printf '%s %s %s %s\n' "$d" "$(lab_devno "$d")" "$(lab_hctl "$d")" "$(lab_udev_serial "$d")"
done >"$LAB_OUT/paths.txt"
lab_note "paths: $(tr '\n' ';' <"$LAB_OUT/paths.txt")"
serials=$(awk '{ print $4 }' "$LAB_OUT/paths.txt" | sort -u)
lab_assert_eq "distinct WWIDs (udev ID_SERIAL)" 4 "$(echo "$serials" | lab_count)"

# ------------------------------------------------------------------ the reference: multipath-tools
cat >/etc/multipath.conf <<'CONF'
defaults {
	user_friendly_names yes
	find_multipaths no
}
CONF
cp /etc/multipath.conf "$LAB_OUT/ref-multipath.conf"
rm -f /etc/multipath/bindings /etc/multipath/wwids
t0=$(lab_now)
lab_capture ref-multipath-v2.txt multipath -v2 || lab_fail "multipath -v2 failed"
lab_timing ref_multipath_v2_s "$(lab_since "$t0")"
lab_settle
lab_capture ref-multipath-ll.txt multipath -ll || lab_fail "multipath -ll failed"
lab_capture ref-dmsetup-table.txt dmsetup table --target multipath || lab_fail "dmsetup table failed"
lab_capture ref-dmsetup-status.txt dmsetup status --target multipath
lab_assert_eq "reference maps" 4 "$(lab_mpath_count)"
: >"$LAB_OUT/ref-membership.txt"
for s in $serials; do
  name=$(lab_mpath_of_wwid "$s")
  [ -n "$name" ] || lab_fail "multipath-tools made no map with uuid mpath-$s"
  printf '%s %s %s\n' "$s" "$name" "$(lab_map_devnos "$name" | tr ' ' ,)" >>"$LAB_OUT/ref-membership.txt"
done
lab_note "reference membership: $(tr '\n' ';' <"$LAB_OUT/ref-membership.txt")"
mkdir -p "$LAB_MPD_DIR"
cp /etc/multipath/bindings "$LAB_MPD_DIR/bindings" || lab_fail "multipath-tools wrote no bindings file"
cp "$LAB_MPD_DIR/bindings" "$LAB_OUT/ref-bindings"

lab_expect_ok "multipath -F flushes the reference maps" multipath -F
lab_settle
lab_assert_eq "multipath maps after flush" 0 "$(lab_mpath_count)"
rm -f /etc/multipath.conf /etc/multipath/bindings /etc/multipath/wwids

# ------------------------------------------------------------------ multipathd-rs daemon
cat >"$LAB_MPD_DIR/config.toml" <<'TOML'
[defaults]
find_multipaths = "no"
alias_policy = "user_friendly_names"
alias_prefix = "mpath"
TOML
cp "$LAB_MPD_DIR/config.toml" "$LAB_OUT/config.toml"
lab_run "$LAB_BIN/multipathd-rs" --help >/dev/null

t0=$(lab_now)
lab_mpd_start daemon.log
lab_timing daemon_start_to_socket_s "$(lab_since "$t0")"
lab_poll 60 lab_is 4 lab_mpath_count || {
  lab_run dmsetup ls
  lab_fail "multipathd-rs did not build 4 multipath maps within 60 s (see daemon.log)"
}
lab_timing daemon_start_to_4_maps_s "$(lab_since "$t0")"
lab_settle
lab_capture dmsetup-table.txt dmsetup table --target multipath
lab_capture dmsetup-status.txt dmsetup status --target multipath
lab_capture dmsetup-info.txt dmsetup info -c -o name,uuid,major,minor,attr,open,segments,events
lab_assert_eq "multipath maps made by the daemon" 4 "$(lab_mpath_count)"

while read -r s refname refdevs; do
  name=$(lab_mpath_of_wwid "$s")
  [ -n "$name" ] || lab_fail "the daemon made no map with uuid mpath-$s"
  lab_assert_eq "alias of $s (multipath-tools' bindings name)" "$refname" "$name"
  lab_assert_eq "paths of $name ($s), same as multipath-tools" "$refdevs" "$(lab_map_devnos "$name" | tr ' ' ,)"
  lab_poll 15 test -b "/dev/mapper/$name" || lab_fail "/dev/mapper/$name does not exist (15 s after the map)"
  lab_assert_eq "/dev/mapper/$name is the map's node" "$(dmsetup info -c --noheadings -o major,minor --separator : "$name")" \
    "$(stat -L -c '%t %T' "/dev/mapper/$name" | { read -r ma mi; printf '%d:%d' "0x$ma" "0x$mi"; })"
  for dn in ${refdevs//,/ }; do
    lab_assert_eq "$name path $dn state in dmsetup status" A "$(lab_dm_path_state "$name" "$dn")"
  done
done <"$LAB_OUT/ref-membership.txt"
lab_run ls -l /dev/mapper

# The control socket.
lab_capture show-topology.txt lab_mpd show topology || lab_fail "show topology failed"
topo=$(cat "$LAB_OUT/show-topology.txt")
while read -r s refname refdevs; do
  lab_assert_match "topology header of $refname" "^$refname \\($s\\) dm-[0-9]+ Linux,scsi_debug" "$topo"
done <"$LAB_OUT/ref-membership.txt"
lab_assert_eq "topology path lines 'active ready running'" 8 \
  "$(grep -cE '[0-9]+:[0-9]+:[0-9]+:[0-9]+ sd[a-z]+ +[0-9]+:[0-9]+ +active ready running' "$LAB_OUT/show-topology.txt")"
lab_capture show-maps.json lab_mpd show maps --json || lab_fail "show maps --json failed"
jq -e . "$LAB_OUT/show-maps.json" >/dev/null || lab_fail "show maps --json is not JSON"
lab_assert_eq "show maps --json: maps" 4 "$(jq '.maps | length' "$LAB_OUT/show-maps.json")"
while read -r s refname refdevs; do
  lab_assert_eq "show maps --json: paths (dev_t) of $refname" "$refdevs" \
    "$(jq -r --arg n "$refname" '.maps[] | select(.name == $n) | [.path_groups[].paths[].dev_t] | sort | join(",")' "$LAB_OUT/show-maps.json")"
  lab_assert_eq "show maps --json: uuid of $refname" "$s" \
    "$(jq -r --arg n "$refname" '.maps[] | select(.name == $n) | .uuid' "$LAB_OUT/show-maps.json")"
done <"$LAB_OUT/ref-membership.txt"
lab_capture show-paths.json lab_mpd show paths --json || lab_fail "show paths --json failed"
lab_assert_eq "show paths --json: paths active in dm and ready" 8 \
  "$(jq '[.paths[] | select(.dm_state == "active" and .chk_state == "ready")] | length' "$LAB_OUT/show-paths.json")"
lab_capture show-paths.txt lab_mpd show paths
lab_capture show-maps.txt lab_mpd show maps
lab_capture show-status.txt lab_mpd show status

# One-shot dry run on the live kernel: every map exists and matches, so the plan is `keep`.
lab_capture once-dry-run.json "$LAB_BIN/multipathd-rs" --dm-backend kernel --config "$LAB_MPD_DIR/config.toml" \
  --aliases-table "$LAB_MPD_DIR/aliases.toml" --bindings-file "$LAB_MPD_DIR/bindings" once --dry-run --json \
  || lab_fail "once --dry-run --json failed"
lab_assert_eq "once --dry-run: dry_run" true "$(jq '.dry_run' "$LAB_OUT/once-dry-run.json")"
lab_assert_eq "once --dry-run: actions" "keep keep keep keep" \
  "$(jq -r '[.maps[].action] | join(" ")' "$LAB_OUT/once-dry-run.json")"
lab_assert_eq "once --dry-run: nothing applied" 0 "$(jq '[.maps[] | select(.applied)] | length' "$LAB_OUT/once-dry-run.json")"
lab_assert_eq "once --dry-run: errors" 0 "$(jq '.errors | length' "$LAB_OUT/once-dry-run.json")"
while read -r s refname refdevs; do
  lab_assert_eq "once --dry-run: paths of $s" "$refdevs" \
    "$(jq -r --arg w "$s" '.maps[] | select(.wwid == $w) | [.groups[].paths[].devno | if type == "string" then . else "\(.major):\(.minor)" end] | sort | join(",")' "$LAB_OUT/once-dry-run.json")"
done <"$LAB_OUT/ref-membership.txt"
lab_assert_eq "the dry run touched no map" "$(cat "$LAB_OUT/dmsetup-table.txt")" "$(dmsetup table --target multipath)"

# ------------------------------------------------------------------ stop (maps stay), restart: adopt
snapshot() { # name attr events, then the tables
  dmsetup info -c --noheadings -o name,attr,events --separator ' ' | sort
  dmsetup table --target multipath | sort
}
# dm uevents seen by the monitor, one line each: dev action DM_ACTION ("-" when none).
dm_uevents() {
  awk 'BEGIN { RS = ""; FS = "\n" }
    /\nDEVNAME=(\/dev\/)?dm-/ {
      a = ""; dev = ""; dmact = "-"
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^ACTION=/) a = substr($i, 8)
        if ($i ~ /^DEVNAME=/) { dev = substr($i, 9); sub(/^\/dev\//, "", dev) }
        if ($i ~ /^DM_ACTION=/) dmact = substr($i, 11)
      }
      print dev, a, dmact
    }' "$LAB_OUT/uevents-restart.txt"
}
udevadm monitor --kernel --property --subsystem-match=block >"$LAB_OUT/uevents-restart.txt" 2>&1 &
mon=$!
lab_bg_add "$mon"
sleep 1
# Positive control: a suspend+resume must show up as a change uevent without DM_ACTION.
ctl=$(lab_mpath_maps | head -n1)
lab_expect_ok "positive control: suspend + resume $ctl" sh -c "dmsetup suspend $ctl && dmsetup resume $ctl"
resumes_seen() { dm_uevents | awk '$2 == "change" && $3 == "-"' | lab_count; }
lab_poll 10 lab_ge 1 resumes_seen \
  || lab_fail "the uevent monitor did not see the control resume of $ctl: the no-resume oracle would be blind"
ctl_events=$(dm_uevents | lab_count)
lab_note "uevents of the control: $(dm_uevents | tr '\n' ';')"
lab_capture before-restart.txt snapshot
t0=$(lab_now)
lab_mpd_stop TERM || lab_fail "the daemon did not stop on SIGTERM within 20 s"
lab_timing sigterm_to_exit_s "$(lab_since "$t0")"
lab_assert_eq "maps after SIGTERM (stay)" 4 "$(lab_mpath_count)"
lab_capture after-stop.txt snapshot
lab_assert_eq "maps untouched by the stop" "$(cat "$LAB_OUT/before-restart.txt")" "$(cat "$LAB_OUT/after-stop.txt")"
# Checked at the end, so that the adoption proof below runs whatever they show.
stop_rc=$LAB_MPD_RC
stop_sock=$(test -e "$LAB_MPD_SOCK" && echo yes || echo no)
stop_logged=$(grep -c 'stopped; every map stays in place' "$LAB_OUT/daemon.log")

t0=$(lab_now)
lab_mpd_start daemon.log
lab_timing restart_to_socket_s "$(lab_since "$t0")"
lab_poll 30 lab_is 4 lab_mpd_map_count \
  || lab_fail "the restarted daemon does not show 4 maps within 30 s"
lab_timing restart_to_4_maps_adopted_s "$(lab_since "$t0")"
sleep 3 # a first check round and any deferred work of the restarted daemon
lab_capture after-restart.txt snapshot
kill "$mon" 2>/dev/null
wait "$mon" 2>/dev/null
lab_assert_eq "event numbers, attrs and tables after the restart" \
  "$(cat "$LAB_OUT/before-restart.txt")" "$(cat "$LAB_OUT/after-restart.txt")"
# Kernel uevents for dm devices while the daemon stopped and started (after the control's).
dm_uevents | tail -n +"$((ctl_events + 1))" >"$LAB_OUT/uevents-restart-dm.txt"
lab_note "dm uevents during the restart (dev action DM_ACTION): $(tr '\n' ';' <"$LAB_OUT/uevents-restart-dm.txt")"
lab_assert_eq "dm resume/add/remove uevents during stop+restart (reload or suspend)" 0 \
  "$(awk '$2 != "change" || $3 == "-"' "$LAB_OUT/uevents-restart-dm.txt" | lab_count)"
lab_capture show-topology-after-restart.txt lab_mpd show topology
lab_assert_eq "topology path lines after restart" 8 \
  "$(grep -cE 'active ready running' "$LAB_OUT/show-topology-after-restart.txt")"
grep -nE 'create|reload|rename|adopt|kept|keep' "$LAB_OUT/daemon.log" >>"$LAB_EVIDENCE" 2>/dev/null

# The orderly stop on SIGTERM (README: the socket file is removed when the server stops;
# daemon: "stopped; every map stays in place" is logged).
lab_assert_eq "daemon exit status after SIGTERM" 0 "$stop_rc"
lab_assert_eq "daemon logged its orderly stop after SIGTERM" 1 "$stop_logged"
lab_assert_eq "socket file removed at stop" no "$stop_sock"

# ------------------------------------------------------------------ teardown
lab_mpd_stop TERM || lab_fail "the daemon did not stop on SIGTERM"
for m in $(lab_mpath_maps); do
  lab_expect_ok "remove $m after the daemon stopped" dmsetup remove "$m"
done
lab_settle
lab_assert_eq "maps left" 0 "$(lab_mpath_count)"
lab_expect_ok "rmmod scsi_debug (no path held)" rmmod scsi_debug
