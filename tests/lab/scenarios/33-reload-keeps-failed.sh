#!/bin/bash
# 33-reload-keeps-failed: a reload never leaves a path the daemon holds failed active in dm.
# A new table starts with every path active (dm-mpath), so after each reload the daemon must
# fail again the paths it knows are down. Lab 41 once saw, under load, a path offline while dm
# showed it active after a periodic reconcile had reloaded its map with the groups reordered.
# scsi_debug 2 hosts x 3 LUNs, udevd running (a resume waits for it), path_grouping_policy
# failover (one path per group: failing the first group's path reorders the groups, so the
# next reconcile reloads the map), reconcile_interval 3 s.
# For each LUN: its host0 path (the first group) goes offline; once dm shows it F the daemon's
# periodic reconcile reloads the map with that path's group last. A sampler reads `dmsetup
# status` every 20 ms throughout; the oracle is the samples: after the first F, how long the
# offline path showed active again (under 2 s, and F at the end), and the new table's order.
# Before the fix the resume's wait for udevd (3.6 s on a quiet machine, 8-13 s at load 11) was
# the window: the path showed active 3.7 s. The fix sends the fails as soon as the new table is
# live (dm-tables KernelBackend::load); the daemon logs each slow resume with when they went out.
# Positive controls: the sampler sees the path active before it goes offline, and it sees a path
# active that is reinstated by hand (`dmsetup message ... reinstate_path`, the daemon stopped
# for 1 s) while offline; the daemon then fails that path again.
# lab-udevd: yes
# lab-timeout: 300
set -u
. "$LAB_LIB"
trap lab_mpd_cleanup EXIT
INTERVAL=2

lab_scsi_debug 2 3
lab_paths_table
first_group_devno() { dmsetup table "$1" | grep -oE '[0-9]+:[0-9]+' | head -n1; }

mkdir -p "$LAB_MPD_DIR"
cat >"$LAB_MPD_DIR/config.toml" <<TOML
[defaults]
polling_interval = $INTERVAL
reconcile_interval = 3

[overrides]
path_grouping_policy = "failover"
TOML
cp "$LAB_MPD_DIR/config.toml" "$LAB_OUT/config.toml"
lab_mpd_start daemon.log
lab_poll 60 lab_is 3 lab_mpath_count || lab_fail "the daemon did not build 3 maps within 60 s"
lab_capture dmsetup-table-start.txt dmsetup table --target multipath

# The sampler: "uptime devno state" for every path of every multipath map, every 20 ms.
(
  while :; do
    t=$(cut -d' ' -f1 /proc/uptime)
    dmsetup status --target multipath 2>/dev/null \
      | awk -v t="$t" '{ for (i = 1; i < NF; i++) if ($i ~ /^[0-9]+:[0-9]+$/ && ($(i + 1) == "A" || $(i + 1) == "F")) print t, $i, $(i + 1) }'
    sleep 0.02
  done >"$LAB_OUT/samples.txt"
) &
sampler=$!
lab_bg_add "$sampler"
sleep 1

# active_after_f DEVNO: the longest time (s, 2 decimals) DEVNO was sampled active after it was
# first sampled F, and its last sampled state: "SECONDS LAST".
active_after_f() {
  awk -v d="$1" '$2 == d {
      if ($3 == "F") { seen_f = 1; if (start != "") { if ($1 - start > worst) worst = $1 - start; start = "" } }
      else if (seen_f && start == "") start = $1
      last = $3; lt = $1
    }
    END { if (start != "") { if (lt - start > worst) worst = lt - start }; printf "%.2f %s\n", worst + 0, last }' "$LAB_OUT/samples.txt"
}
sampled() { awk -v d="$1" -v s="$2" '$2 == d && $3 == s { n++ } END { print n + 0 }' "$LAB_OUT/samples.txt"; }

# All three LUNs at once: each one's host0 path goes offline, then each map is reloaded.
declare -A P Q PN QN M
for lun in 0 1 2; do
  P[$lun]=$(lab_path_of "$h0" "$lun") Q[$lun]=$(lab_path_of "$h1" "$lun")
  PN[$lun]=$(lab_devno_of "${P[$lun]}") QN[$lun]=$(lab_devno_of "${Q[$lun]}")
  M[$lun]=$(lab_map_of_devno "${PN[$lun]}")
  [ -n "${M[$lun]}" ] || lab_fail "no map holds ${P[$lun]} (${PN[$lun]})"
  lab_assert_eq "${M[$lun]}: ${P[$lun]} (${PN[$lun]}) leads (first group)" "${PN[$lun]}" "$(first_group_devno "${M[$lun]}")"
  lab_assert_eq "control: the sampler saw ${PN[$lun]} active before the fault" yes \
    "$([ "$(sampled "${PN[$lun]}" A)" -gt 0 ] && echo yes || echo no)"
done
for lun in 0 1 2; do lab_path_offline "${P[$lun]}"; done
for lun in 0 1 2; do
  m=${M[$lun]}
  lab_poll 20 lab_is F lab_dm_path_state "$m" "${PN[$lun]}" || lab_fail "$m: ${P[$lun]} not F 20 s after going offline"
  lab_poll 60 lab_is "${QN[$lun]}" first_group_devno "$m" \
    || lab_fail "$m: the daemon did not reload the map with ${Q[$lun]} first within 60 s (table: $(dmsetup table "$m"))"
  lab_note "$m: reloaded with ${Q[$lun]} (${QN[$lun]}) first: $(dmsetup table "$m")"
done
sleep 2
for lun in 0 1 2; do
  m=${M[$lun]} p=${P[$lun]}
  read -r worst last <<<"$(active_after_f "${PN[$lun]}")"
  lab_note "$m: $p sampled active for up to ${worst} s after it was first failed; last sample $last"
  lab_assert_eq "$m: $p is F after the reload" F "$(lab_dm_path_state "$m" "${PN[$lun]}")"
  lab_assert_eq "$m: $p never sampled active for 2 s or more after the daemon failed it" yes \
    "$(awk -v w="$worst" 'BEGIN { print (w < 2.0) ? "yes" : "no" }')"
done

# Positive control: a hand reinstate of an offline path (the daemon stopped for 1 s meanwhile)
# shows as active in the samples, and the daemon fails it again.
p=$(lab_path_of "$h0" 0) pn=$(lab_devno_of "$p")
m=$(lab_map_of_devno "$pn")
kill -STOP "$LAB_MPD_PID" # held still: the reinstate stays visible for a while
lab_run dmsetup message "$m" 0 reinstate_path "$pn"
sleep 1
kill -CONT "$LAB_MPD_PID"
lab_poll 30 lab_is F lab_dm_path_state "$m" "$pn" || lab_fail "$m: the daemon did not fail $p again within 30 s of a hand reinstate"
sleep 0.5
read -r worst last <<<"$(active_after_f "$pn")"
lab_note "control: after the hand reinstate, $p was sampled active for ${worst} s"
lab_assert_eq "control: the sampler sees the hand-reinstated $p active" yes \
  "$(awk -v w="$worst" 'BEGIN { print (w > 0) ? "yes" : "no" }')"
kill "$sampler" 2>/dev/null
lab_note "the daemon's slow resumes: $(grep -c 'waited .* for udevd' "$LAB_OUT/daemon.log") ($(grep -o 'waited .* for udevd.*' "$LAB_OUT/daemon.log" | tr '\n' ';'))"
lab_capture daemon-show-paths.txt lab_mpd show paths
for lun in 0 1 2; do lab_path_running "$(lab_path_of "$h0" "$lun")"; done

# ------------------------------------------------------------------ teardown
lab_mpd_stop TERM || lab_fail "the daemon did not stop on SIGTERM"
for m in $(lab_mpath_maps); do lab_expect_ok "remove $m" lab_map_remove "$m"; done
lab_expect_ok "rmmod scsi_debug" rmmod scsi_debug
