#!/bin/bash
# 91-bench-coldstart: multipath-tools and multipathd-rs on the same scsi_debug topology (2 hosts
# x 256 LUNs = 512 paths):
# - cold_start_256: daemon start to every map in `dmsetup ls --target multipath` with all its paths
#   in its table;
# - idle_cpu: then, with every map up and udevd settled, the daemon's own CPU (utime + stime of
#   all its threads, /proc/PID/stat) over $BENCH_IDLE_WINDOW s, in CPU seconds per second. The
#   window starts once the daemon is $BENCH_IDLE_AGE s old (120 by default), so both are past
#   the ramp of their path checks (every 5 s, doubled up to 20 s while a path stays healthy, in
#   both tools): measured at 60 s, multipathd-rs' checks of maps it had just booked still ran
#   every 5-10 s while multipathd's, started 40 s earlier, ran at the ceiling;
# - idle_cpu_guest: the whole guest's non-idle CPU (/proc/stat) over the same window (udevd,
#   kernel workers, the checkers' SCSI commands), in CPU seconds per second of its 2 CPUs.
#
# Setup (not measured, but it has to fit the guest's time): under emulation udevd is what costs.
# One run with Debian's full rules and every event of 512 new disks took 1253 s and still had
# not settled, and multipath-tools, which waits for udevd after each map it makes, then never
# reached 256 maps. So:
# - scsi_debug's disks are made with udevd stopped, then udevd gets an "add" for the sd block
#   devices only (nobody here reads the udev records of scsi_device, scsi_disk, bsg, sg);
# - /etc/multipath.conf (find_multipaths no: what multipath-tools is measured with) is in place
#   before udevd sees a disk, as on a host set up that way, so 60-multipath.rules records every
#   path as a multipath member (otherwise multipathd re-triggers a uevent for every path of
#   every map it makes, which a configured host never pays);
# - four rules files are masked (/etc/udev/rules.d/X -> /dev/null) for the whole scenario, so
#   both daemons see the same udev: 56-dm-mpath.rules (`multipath -U` on every map event),
#   60-kpartx.rules (kpartx on every map event), 60-persistent-storage-dm.rules (blkid reads
#   every map), 68-del-part-nodes.rules (partx on every path). Neither daemon reads what they
#   record (they serve LVM, systemd, partitions, /dev/disk links); each map event still runs
#   55-dm.rules and 95-dm-notify.rules (the udev cookie both daemons wait for). Masking them
#   favours the tool that waits for udevd more (multipath-tools makes its maps one at a time).
# - calibration: the first 16 LUNs get their udev events first and 16 maps are made by hand
#   (dmsetup, one at a time, each waiting for udevd); from those rates the scenario keeps the
#   largest count of 256, 128, 64, 32 whose setup and both measurements fit its time budget,
#   deletes the other LUNs and records why (cold_start_256 not measured, cold_start_N measured).
# The kernel's block uevents during each daemon's window are counted (uevents.log).
# The cold start is timed to the poll whose sysfs look (builtins only, bench_hint) saw every map
# live with all its paths; dmsetup confirms it after (under emulation its processes took up to
# 3.5 s to answer while udevd worked through the maps' events, more than multipathd-rs' whole
# start). The profile (results.json, profile.txt) splits each start on the guest's clocks: the
# daemon's log (multipathd-rs: first line, initial sync's scan / plan / apply / refresh, ready),
# the maps' dm uevents (first add, last first-change = last map live), the oracle's polls.
# Repetitions: $BENCH_REPS_COLDSTART, as long as the budget holds. multipathd-rs goes first in odd
# repetitions (the guest may run out of time during multipath-tools'). Writes results.json for
# `cargo run --release -p bench` (never asserts times).
# lab-udevd: no
# lab-timeout: 2100
set -u
. "$LAB_LIB"
# shellcheck source=../../bench/lab-bench.sh
. "$LAB_WS/tests/bench/lab-bench.sh"

# BENCH_COLDSTART_LUNS: fewer LUNs (16, 32, ...) for a quick run while working on the cold start.
HOSTS=2 WANT=${BENCH_COLDSTART_LUNS:-256} BATCH=32
CAL=$((WANT < 16 ? WANT : 16))
BENCH_REPS=${BENCH_REPS_COLDSTART:-$BENCH_REPS}
BENCH_IDLE_WINDOW=${BENCH_IDLE_WINDOW:-20}
BENCH_IDLE_AGE=${BENCH_IDLE_AGE:-120}
BENCH_POLL=0.2 # even a builtin glob over 256 maps' slaves every 50 ms would take CPU from the daemons
# Seconds this scenario may take in all (lab-timeout minus the removal of the maps at the end).
BUDGET=${BENCH_COLDSTART_BUDGET:-1980}
MASKED="56-dm-mpath.rules 60-kpartx.rules 60-persistent-storage-dm.rules 68-del-part-nodes.rules"
T_START=$EPOCHREALTIME

left() { awk -v a="$T_START" -v b="$EPOCHREALTIME" -v t="$BUDGET" 'BEGIN { printf "%d", t - (b - a) }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

mask_rules() {
  local r
  mkdir -p /etc/udev/rules.d
  for r in $MASKED; do ln -sfn /dev/null "/etc/udev/rules.d/$r"; done
}
unmask_rules() {
  local r
  for r in $MASKED; do [ -L "/etc/udev/rules.d/$r" ] && rm -f "/etc/udev/rules.d/$r"; done
}
MON_PID=""
finish() {
  [ -n "$MON_PID" ] && kill "$MON_PID" 2>/dev/null
  # The maps go with udevd still running (its cookies), then udevd stops, so the runner's
  # removal of 512 disks is the kernel's work alone.
  [ "$(bench_maps)" = 0 ] || remove_maps
  lab_udevd_stop >/dev/null
  unmask_rules
  rm -f /etc/multipath.conf
}
trap finish EXIT

udevd_up() {
  local udevd=/lib/systemd/systemd-udevd
  [ -x "$udevd" ] || udevd=/usr/lib/systemd/systemd-udevd
  mkdir -p /run/udev
  "$udevd" --daemon --resolve-names=never || lab_fail "systemd-udevd did not start"
  lab_wait "udevd's control socket" 30 test -S /run/udev/control
}
# Stops udevd and keeps its database (lab_udevd_stop removes it).
udevd_down() {
  local i
  udevadm control --exit 2>/dev/null
  for i in $(seq 100); do lab_udevd_running || break; sleep 0.1; done
  lab_udevd_running && lab_fail "udevd did not exit"
}

# disks.txt: "LUN HOST sdX MAJ:MIN" for every scsi_debug disk, by LUN then host; builtins only.
disk_table() {
  local d hctl b dev model
  for d in /sys/class/scsi_disk/*; do
    [ -e "$d/device/model" ] || continue
    read -r model <"$d/device/model"
    [ "$model" = scsi_debug ] || continue
    hctl=${d##*/}
    for b in "$d"/device/block/*; do
      [ -e "$b/dev" ] || continue
      read -r dev <"$b/dev"
      printf '%s %s %s %s\n' "${hctl##*:}" "${hctl%%:*}" "${b##*/}" "$dev"
    done
  done | sort -k1,1n -k2,2n >"$LAB_OUT/disks.txt"
}
disk_count() { local a=(/sys/block/sd*); echo "${#a[@]}"; }

# udev_add FROM TO: "add" for the sd block devices of LUNs FROM..TO-1, until udevd processed them.
udev_add() {
  local devs
  devs=$(awk -v a="$1" -v b="$2" '$1 >= a && $1 < b { print "/sys/class/block/" $3 }' "$LAB_OUT/disks.txt")
  # shellcheck disable=SC2086 # one argument per device
  timeout "$(($(left) > 60 ? $(left) : 60))" udevadm trigger --action=add --settle $devs ||
    lab_log "udevadm trigger --settle for LUNs $1-$(($2 - 1)) failed or timed out"
}

# shrink_to N: delete the LUNs from N on (never seen by udevd: it is stopped meanwhile, so their
# removal costs no events) and lower max_luns, so no scan brings them back.
shrink_to() {
  local n="$1" d l
  udevd_down
  for d in /sys/class/scsi_device/*; do
    l=${d##*:}
    [ "$l" -ge "$n" ] 2>/dev/null && echo 1 >"$d/device/delete"
  done
  echo "$n" >"$LAB_SD_SYSFS/max_luns"
  udevd_up
  lab_wait "$((HOSTS * n)) disks left" 120 sh -c "[ \$(ls -d /sys/block/sd* | wc -l) -eq $((HOSTS * n)) ]"
  disk_table
}

# Every dm map, without waiting for udevd map by map (each removal's cookie would), then settle.
remove_maps() {
  dmsetup remove_all --noudevsync >/dev/null 2>&1
  lab_settle 300
  [ "$(bench_maps)" = 0 ] || lab_dm_remove_all
}
BENCH_REMOVE_MAPS=remove_maps

# The wait's pre-check, from sysfs with builtins only (forks nothing: dmsetup's processes cost
# seconds under emulation while udevd works through the maps' events): N maps with a multipath
# uuid and a live table (a size: 0 until the first resume), whose slaves hold PATHS paths. The
# cold start is timed to the poll where this passed; dmsetup then confirms it (bench_ready).
bench_hint() {
  local d u sz n=0 p=0 s
  shopt -s nullglob
  s=(/sys/block/dm-*/slaves/*)
  if [ "${#s[@]}" -ge "${2:-$1}" ]; then
    for d in /sys/block/dm-*; do
      { read -r u <"$d/dm/uuid" && read -r sz <"$d/size"; } 2>/dev/null || continue
      [[ $u == mpath-* ]] && ((sz > 0)) || continue
      s=("$d"/slaves/*)
      n=$((n + 1)) p=$((p + ${#s[@]}))
    done
  fi
  shopt -u nullglob
  ((n >= $1 && p >= ${2:-0}))
}

# probe CMD...: the wall time of its second run (the first reads it over 9p), as evidence of
# what one udev rule's program costs under emulation.
probe() {
  local t
  "$@" >/dev/null 2>&1
  t=$(bench_now)
  "$@" >/dev/null 2>&1
  lab_note "probe: $(bench_since "$t") s: $*"
}

# uevent_counts FROM_LINE: kernel block uevents in uevents.log since that line, by action and kind.
uevent_counts() {
  tail -n +"$(($1 + 1))" "$LAB_OUT/uevents.log" | awk '$1 ~ /^KERNEL\[/ {
      kind = ($3 ~ /\/dm-[0-9]+$/) ? "dm" : ($3 ~ /\/sd[a-z]+$/) ? "sd" : "other"; n[$2 " " kind]++ }
    END { for (k in n) printf "%s %d, ", k, n[k] }'
}
uevent_lines() { wc -l <"$LAB_OUT/uevents.log"; }

# log_at TOOL PATTERN RT0: seconds from RT0 (realtime) to the last line of the tool's log that
# matches (the daemon's own UTC timestamps); ? without one.
log_at() {
  local ts
  ts=$(grep -a -- "$2" "$LAB_OUT/$1.log" | tail -n 1 | grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z' | head -n 1)
  if [ -n "$ts" ]; then awk -v a="$3" -v b="$(date -d "$ts" +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; else printf '?'; fi
}

# profile TOOL REP UP0 RT0 EV0 SECS: where the cold start's SECS went, on the guest's clocks
# from the daemon's start (UP0 = /proc/uptime, the clock of udevadm monitor's KERNEL[...]
# stamps; RT0 = realtime, the clock of the daemon's log): the daemon's own phases from its log,
# the maps' dm uevents, and the oracle's polls.
profile() {
  local tool="$1" rep="$2" up0="$3" rt0="$4" ev0="$5" secs="$6" up1 rt1 first live n lastadd med slow drift sync=""
  read -r up1 _ </proc/uptime
  rt1=$EPOCHREALTIME
  # Per map: its dm add (DM_DEV_CREATE) and its first change (the resume that made it live);
  # the median and slowest time from one to the other is the kernel's (and the daemon's) work
  # on that map, the spread of the adds how long the maps waited to be started.
  read -r first live n lastadd med slow <<<"$(tail -n +"$((ev0 + 1))" "$LAB_OUT/uevents.log" | awk -v u0="$up0" '
    $1 ~ /^KERNEL\[/ && $3 ~ /\/dm-[0-9]+$/ {
      t = substr($1, 8, length($1) - 8) - u0
      if ($2 == "add") { if (first == "") first = t; if (!($3 in add)) { add[$3] = t; if (t > lastadd) lastadd = t } }
      if ($2 == "change" && !($3 in up)) { up[$3] = t; n++; if (t > last) last = t } }
    END {
      k = 0
      for (d in up) if (d in add) lat[++k] = up[d] - add[d]
      # insertion sort: at most a few hundred maps
      for (i = 2; i <= k; i++) { v = lat[i]; for (j = i - 1; j >= 1 && lat[j] > v; j--) lat[j + 1] = lat[j]; lat[j + 1] = v }
      printf "%.2f %.2f %d %.2f %.2f %.2f\n", first, last, n, lastadd, k ? lat[int((k + 1) / 2)] : -1, k ? lat[k] : -1 }')"
  drift=$(awk -v a="$up0" -v b="$up1" -v c="$rt0" -v d="$rt1" 'BEGIN { printf "%.2f", (d - c) - (b - a) }')
  if [ "$tool" = multipathd-rs ]; then
    sync="first log line at $(log_at "$tool" 'starting (pid' "$rt0") s, initial sync from $(log_at "$tool" 'initial sync: start' "$rt0") s to $(log_at "$tool" 'initial sync: [0-9]* maps;' "$rt0") s ($(grep -a 'initial sync: [0-9]* maps;' "$LAB_OUT/$tool.log" | tail -n 1 | sed 's/.*initial sync: //')); ready at $(log_at "$tool" 'ready: ' "$rt0") s; "
  fi
  bench_profile "$tool rep $rep, $K LUNs, cold start ${secs:-not measured} s: ${sync}first map's dm add at $first s, the last at $lastadd s, the last of $n maps live (first dm change) at $live s, a map's add to live median $med s, slowest $slow s; CPU $(bench_cpu_until "$tool" "$rt0" "${secs:-$live}"); the oracle saw them all in sysfs at ${secs:-?} s (poll $BENCH_POLLS, every ${BENCH_POLL}s; $BENCH_LOOKS ran dmsetup), dmsetup confirmed at ${confirmed:-?} s; clocks drift ${drift} s"
}

# ------------------------------------------------------------------------------------ setup
grep -q '^scsi_dh_alua ' /proc/modules || lab_fail "scsi_dh_alua must be loaded before scsi_debug"
mask_rules
mkdir -p /etc/multipath
printf 'defaults {\n\tfind_multipaths no\n}\n' >/etc/multipath.conf
bench_clean_state
lab_note "setup: udevd stopped; masked rules: $MASKED; host load in the guest: $(loadavg)"
t0=$(bench_now)
lab_run modprobe scsi_debug add_host="$HOSTS" num_tgts=1 max_luns="$WANT" vpd_use_hostno=0 \
  dev_size_mb=8 || lab_fail "modprobe scsi_debug failed"
# Block devices, not scsi_disk entries: sd makes its scsi_disk before the disk itself.
lab_wait "$((HOSTS * WANT)) scsi_debug disks" 600 sh -c "[ \$(ls -d /sys/block/sd* | wc -l) -ge $((HOSTS * WANT)) ]"
T_KERN=$(bench_since "$t0")
C_KERN=$(div "$T_KERN" $((HOSTS * WANT)))
disk_table
lab_note "setup: $(disk_count) disks made by the kernel in $T_KERN s without udevd ($C_KERN s a disk)"
first=$(awk 'NR == 1 { print $3 }' "$LAB_OUT/disks.txt")
first_hctl=$(basename "$(readlink -f "/sys/block/$first/device")")

udevd_up
# What single programs of the rules cost here (the ones that run for an sd "add" or a map event).
probe /bin/true
probe /sbin/multipath -u "$first"
probe /usr/bin/sg_inq --export --inhex="/sys/class/scsi_device/$first_hctl/device/inquiry" --raw
probe /usr/bin/sg_inq --export --inhex="/sys/class/scsi_device/$first_hctl/device/vpd_pg83" --raw
probe /bin/sh -c 'echo 0x1 | /bin/sed s/^0x//'
probe /lib/udev/scsi_id --export --whitelisted -d "/dev/$first"
probe /usr/bin/partx -d --nr 1-1024 "/dev/$first"
probe /sbin/dmsetup version
probe udevadm info --query=property --name="/dev/$first"

# Calibration: udev for the first CAL LUNs, then CAL maps by hand, one at a time.
t0=$(bench_now)
udev_add 0 "$CAL"
T_CAL=$(bench_since "$t0")
C_DISK=$(div "$T_CAL" $((HOSTS * CAL)))
lab_note "calibration: udevd processed the sd \"add\" of $((HOSTS * CAL)) disks in $T_CAL s ($C_DISK s a disk); guest load $(loadavg)"
t0=$(bench_now)
for l in $(seq 0 $((CAL - 1))); do
  devs=$(awk -v l="$l" '$1 == l { printf " %s", $4 }' "$LAB_OUT/disks.txt")
  read -r a b <<<"$devs"
  dmsetup create "cal$l" -u "mpath-cal$l" \
    --table "0 16384 multipath 0 1 alua 2 1 service-time 0 1 1 $a 1 service-time 0 1 1 $b 1" ||
    lab_fail "calibration map cal$l could not be made"
done
T_MAP=$(bench_since "$t0")
C_MAP=$(div "$T_MAP" "$CAL")
probe /sbin/multipath -U -v1 "$(basename "$(readlink -f /dev/mapper/cal0)")"
probe /sbin/kpartx -un -p -part /dev/mapper/cal0
t0=$(bench_now)
remove_maps
T_RM=$(bench_since "$t0")
C_RM=$(div "$T_RM" "$CAL")
lab_note "calibration: $CAL maps by dmsetup, one at a time with udev sync, in $T_MAP s ($C_MAP s a map); removed and settled in $T_RM s"

# plan K: predicted seconds from now for the rest of the setup and one repetition of both
# tools: the other disks' udev events, multipath-tools at 1.5 x and multipathd-rs at 1 x the
# hand-made map rate (both wait for udevd's cookie; multipath-tools map after map), each
# daemon's settle, idle window and map removal.
plan() {
  awk -v k="$1" -v cal="$CAL" -v h="$HOSTS" -v cd="$C_DISK" -v cm="$C_MAP" -v cr="$C_RM" \
    -v w="$BENCH_IDLE_WINDOW" -v a="$BENCH_IDLE_AGE" 'BEGIN { printf "%d", (k - cal) * h * cd + k * cm * 2.5 + 2 * (w + a + k * cr + 30) }'
}
K=$CAL
for k in 256 128 64 32; do
  ((k <= WANT)) || continue
  lab_note "plan: $k LUNs would take about $(plan "$k") s of the $(left) s left"
  if [ "$(plan "$k")" -le "$(left)" ]; then K=$k && break; fi
done
if [ "$K" -lt "$WANT" ]; then
  SHRUNK="setup at $WANT LUNs does not fit the guest's time under emulation (udevd $C_DISK s a disk, $C_MAP s a map made by hand; predicted $(plan "$WANT") s, $(left) s left): measured at $K LUNs"
  lab_note "plan: $SHRUNK"
  shrink_to "$K"
fi

# The other LUNs' udev events, in batches, with the rate of each.
for ((a = CAL; a < K; a += BATCH)); do
  b=$((a + BATCH > K ? K : a + BATCH))
  t0=$(bench_now)
  udev_add "$a" "$b"
  lab_note "setup: udev for LUNs $a-$((b - 1)) in $(bench_since "$t0") s; $(left) s left; guest load $(loadavg)"
done
lab_settle 120
n_disks=$(wc -l <"$LAB_OUT/disks.txt")
recs=$(awk '{ print "/run/udev/data/b" $4 }' "$LAB_OUT/disks.txt")
# shellcheck disable=SC2086 # one argument per record
n_serial=$(grep -l '^E:ID_SERIAL=' $recs 2>/dev/null | lab_count)
# shellcheck disable=SC2086
n_member=$(grep -l '^E:DM_MULTIPATH_DEVICE_PATH=1' $recs 2>/dev/null | lab_count)
lab_note "setup: $n_disks disks ($K LUNs), $n_serial with ID_SERIAL and $n_member marked multipath members in udev's records, after $(bench_since "$T_START") s; $(left) s left"
[ "$n_serial" = "$n_disks" ] || lab_note "WARNING: udevd recorded no ID_SERIAL for $((n_disks - n_serial)) of $n_disks disks: multipath-tools reads it there"

# ------------------------------------------------------------------------------ measurement
udevadm monitor --kernel --subsystem-match=block >"$LAB_OUT/uevents.log" 2>&1 &
MON_PID=$!
PATHS=$((HOSTS * K))
# At fewer LUNs every metric's name says how many: cold_start_128, idle_cpu_at_128, ...
if [ "$K" = 256 ]; then sfx="" metric=cold_start_256; else sfx="_at_$K" metric="cold_start_$K"; fi
# Every measurement a shrunk run cannot make at 256 says why.
if [ -n "${SHRUNK:-}" ]; then
  for tool in multipath-tools multipathd-rs; do
    for m in cold_start_256 idle_cpu idle_cpu_guest; do bench_record "$m" "$tool" 1 "" "$SHRUNK"; done
  done
fi

rep_start=$(left)
for rep in $(seq "$BENCH_REPS"); do
  if ((rep > 1)) && (($(left) < rep_cost + 60)); then
    lab_note "repetition $rep not started: $(left) s left, one took $rep_cost s"
    break
  fi
  if ((rep % 2)); then order="multipathd-rs multipath-tools"; else order="multipath-tools multipathd-rs"; fi
  rep_t0=$(left)
  first_tool=1
  for tool in $order; do
    [ "$(bench_maps)" = 0 ] || remove_maps
    # The first daemon may not take more than 40% of what is left, so the second gets its turn.
    if ((first_tool)); then tmo=$(($(left) * 2 / 5)); else tmo=$(($(left) - 90)); fi
    first_tool=0
    if ((tmo < 30)); then
      bench_record "$metric" "$tool" "$rep" "" "no time left in the guest (${tmo}s)"
      continue
    fi
    ev0=$(uevent_lines)
    lab_note "$tool: start (timeout ${tmo}s, guest load $(loadavg))"
    read -r up0 _ </proc/uptime
    t0=$(bench_now)
    bench_start "$tool"
    bench_sampler_start "$BENCH_PID"
    if bench_wait_maps "$K" "$tmo" "$PATHS"; then
      bench_sampler_stop
      # Which of the daemon's threads (those still there) used its cold start's CPU.
      printf 'none 0\n' >"$LAB_OUT/threads-start-$tool-$rep.0"
      bench_task_ticks "$BENCH_PID" >"$LAB_OUT/threads-start-$tool-$rep.1"
      secs=$(bench_us_since "$t0" "$BENCH_SEEN_US")
      confirmed=$(bench_us_since "$t0" "$BENCH_DONE_US")
      bench_record "$metric" "$tool" "$rep" "$secs"
      polls="$BENCH_POLLS $BENCH_LOOKS"
      t1=$(bench_now)
      # The maps' own uevents are udevd's work after the start, not idle time.
      lab_settle "$(($(left) > 400 ? 300 : 60))"
      lab_note "$tool: udevd settled $(bench_since "$t1") s after the last map; block uevents since the start: $(uevent_counts "$ev0")"
      # After the settle: the daemon's own log has its whole start by then.
      read -r BENCH_POLLS BENCH_LOOKS <<<"$polls"
      profile "$tool" "$rep" "$up0" "$t0" "$ev0" "$secs"
      # Both daemons measured at the same age, past their checks' ramp (see the top).
      wait_s=$(awk -v a="$(bench_since "$t0")" -v m="$BENCH_IDLE_AGE" 'BEGIN { w = m - a; printf "%d", (w > 0 ? w + 0.5 : 0) }')
      if ((wait_s > 0)); then
        lab_note "$tool: idle window at the age of $BENCH_IDLE_AGE s: $wait_s s to go"
        sleep "$wait_s"
      fi
      bench_profile "$tool rep $rep, the cold start's CPU by thread (CPU-s from its start to the oracle's dmsetup confirmation; threads that ended by then are not counted): $(bench_thread_split "$LAB_OUT/threads-start-$tool-$rep.0" "$LAB_OUT/threads-start-$tool-$rep.1" 1)"
      bench_idle_cpu "$tool" "$rep" "$BENCH_IDLE_WINDOW" "$sfx"
    else
      bench_sampler_stop
      bench_record "$metric" "$tool" "$rep" "" "$BENCH_ERR"
      confirmed=""
      profile "$tool" "$rep" "$up0" "$t0" "$ev0" ""
      bench_record "idle_cpu$sfx" "$tool" "$rep" "" "no maps: $BENCH_ERR"
      bench_record "idle_cpu_guest$sfx" "$tool" "$rep" "" "no maps: $BENCH_ERR"
      lab_note "$tool: block uevents since the start: $(uevent_counts "$ev0")"
    fi
    lab_capture "$tool-maps-$rep.txt" sh -c 'dmsetup table --target multipath | head -n 4'
    t0=$(bench_now)
    bench_stop
    lab_note "$tool: stopped and maps removed in $(bench_since "$t0") s; $(left) s left"
  done
  rep_cost=$((rep_t0 - $(left)))
done
bench_finish "scsi_debug $HOSTS hosts x $K LUNs; udevd for both: sd add events only, masked ${MASKED//.rules/}"
lab_note "done after $(bench_since "$T_START") s (start of the measurements: $rep_start s left)"
