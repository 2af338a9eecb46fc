#!/bin/bash
# 47-san-registry: hostsync's `san` registry backend on the shared SAN (issue 15, Done when 5).
# A shared VG (lvmlockd + sanlock, sanlock io_timeout shortened to 5 s with lvmlockd -o 5) on
# lun0, its registry LV lab47/hsreg; hostsync changes it only while holding the LV with
# lvchange -aey and reads it under -asy. Mutex control: while A holds the LV exclusively by
# hand, B's `hostsync alias allocate` waits (LVM says "locked by other host", hostsync retries)
# and finishes once A lets go. Then 2 processes on A and 2 on B allocate at once, through
# --registry san:lab47/hsreg, 2 WWIDs they all share (each process in its own order) plus one
# WWID of their own: every WWID has one name, no name has two WWIDs, the names are exactly the
# lowest 7 (mpatha..mpathg), every process printed what the registry holds, and A and B list
# identical tables (`hostsync alias list --json`). Oracle controls: a doctored table with a
# duplicate name and one with two names swapped are flagged by the same checks.
# sanlock runs without its watchdog here (-w 0): fencing is scenario 44's subject, and a
# watchdog reset of a slow TCG guest would only hide what this scenario tests.
# LVM's configuration: the guests see this machine's /etc read-only, so every LVM command runs
# with LVM_SYSTEM_DIR=/tmp/lab47-lvm (lvm.conf written by lib47.sh below: use_lvmlockd, one
# path of lun0 only). TODO(lead): switch to lib-san.sh's LVM helper once scenario 43's lands.
# lab-timeout: 900
set -u
. "$LAB_HOSTS_LIB"

URL=san:lab47/hsreg
T0=$SECONDS

# ------------------------------------------------------------------ guest-side helpers
cat >"$LAB_OUT/lib47.sh" <<'EOF'
# Sourced by this scenario's jobs (after lib.sh and lib-san.sh).
export LVM_SYSTEM_DIR=/tmp/lab47-lvm LVM_SUPPRESS_FD_WARNINGS=1
s47_lvm_conf() {
  local dev
  dev="$(san_lun_paths lun0 | head -n1)"
  [ -n "$dev" ] || lab_fail "$LAB_HOST: no path to lun0"
  mkdir -p "$LVM_SYSTEM_DIR"
  cat >"$LVM_SYSTEM_DIR/lvm.conf" <<CONF
global { use_lvmlockd = 1 event_activation = 0 }
devices {
  filter = [ "a|^/dev/$dev\$|", "r|.*|" ]
  use_devicesfile = 0
  obtain_device_list_from_udev = 0
  multipath_component_detection = 0
  md_component_detection = 0
}
activation { monitoring = 0 }
backup { backup = 0 archive = 0 }
CONF
  echo "$dev"
}
s47_start() {
  local id
  case "$LAB_HOST" in A) id=1 ;; *) id=2 ;; esac
  san_service_start sanlock sanlock daemon -D -U root -G root -w 0
  lab_wait "sanlock on $LAB_HOST answers" 30 sanlock client status
  mkdir -p /run/lvm
  san_service_start lvmlockd lvmlockd -f -g sanlock --host-id "$id" -o 5
  lab_wait "lvmlockd on $LAB_HOST answers" 30 lvmlockctl --info
}
# s47_alloc N WWID...: N processes of this host allocate at once; process i walks the shared
# WWIDs rotated by i (odd ones backwards), then its own WWID "<own prefix>$LAB_HOST$i".
s47_alloc() {
  local n="$1" i j pids="" rc=0 list
  shift
  local shared=("$@")
  for i in $(seq "$n"); do
    list=()
    for j in $(seq 0 $((${#shared[@]} - 1))); do
      list+=("${shared[$(((j + i) % ${#shared[@]}))]}")
    done
    if ((i % 2)); then list=($(printf '%s\n' "${list[@]}" | tac)); fi
    list+=("36001405own${LAB_HOST}${i}")
    hostsync --registry san:lab47/hsreg --host "$LAB_HOST" alias allocate "${list[@]}" \
      >"alloc-$i.out" 2>"alloc-$i.err" &
    pids="$pids $!"
  done
  for i in $pids; do wait "$i" || rc=1; done
  return "$rc"
}
EOF
L='. "$LAB_SHARED/lib47.sh";'

# ------------------------------------------------------------------ shared VG and registry LV
for h in A B; do
  dev=$(on_ok "$h: LVM configuration of its own (one path of lun0)" "$h" "$L s47_lvm_conf") || lab_fail "no LVM configuration on $h"
  lab_note "$h: LVM sees /dev/$dev only"
done
on_ok "A: sanlock (no watchdog) and lvmlockd (io_timeout 5 s)" A --timeout 120 "$L s47_start" >/dev/null || lab_fail "services on A"
on_ok "B: sanlock (no watchdog) and lvmlockd (io_timeout 5 s)" B --timeout 120 "$L s47_start" >/dev/null || lab_fail "services on B"
t=$SECONDS
on_ok "A: vgcreate --shared lab47 (sanlock)" A --timeout 300 \
  "$L vgcreate --shared lab47 /dev/\$(san_lun_paths lun0 | head -n1) && vgchange --lock-start lab47" >/dev/null \
  || lab_fail "cannot create the shared VG"
# Once (of four runs) B's first lock-start failed with "invalid parameters for sanlock" right
# after A created the VG: retried, each failure kept in the evidence.
on_ok "B: vgchange --lock-start lab47 (joins the VG's lockspace)" B --timeout 300 \
  "$L for i in 1 2 3; do vgchange --lock-start lab47 && exit 0; lvmlockctl --info; sleep 5; done; exit 1" >/dev/null \
  || lab_fail "B cannot join the VG's lockspace"
lab_note "shared VG created and both lockspaces joined in $((SECONDS - t)) s"
on_ok "A: the registry LV lab47/hsreg, its header blocks zeroed" A --timeout 120 \
  "$L lvcreate -aey -L 8m -n hsreg lab47 && dd if=/dev/zero of=/dev/mapper/lab47-hsreg bs=64k count=1 oflag=direct && lvchange -an lab47/hsreg" >/dev/null \
  || lab_fail "cannot create the registry LV"
on A "$L vgs -o vg_name,vg_lock_type,vg_lock_args lab47; lvs -a -o lv_name,lv_size,lv_lock_args lab47" >"$LAB_OUT/A/lvs.txt" 2>&1
lab_assert_match "lab47 is a sanlock VG" 'lab47 +sanlock' "$(cat "$LAB_OUT/A/lvs.txt")"

# ------------------------------------------------------------------ the mutex is lvmlockd's lock
W0=36001405ctl000000
on_ok "A: holds lab47/hsreg exclusively by hand" A "$L lvchange -aey lab47/hsreg" >/dev/null || lab_fail "A: lvchange -aey"
t=$SECONDS
on B --timeout 200 "$L HOSTSYNC_LOG=hostsync=debug hostsync --registry $URL --host B alias allocate $W0 >ctl.out 2>ctl.err" &
pb=$!
lab_poll 60 grep -q 'held by another host; retrying' "$LAB_OUT/B/ctl.err" 2>/dev/null \
  || { on B 'cat ctl.err' >&2; lab_fail "B's allocation did not report the LV held by another host"; }
sleep 3
kill -0 "$pb" 2>/dev/null || lab_fail "B's allocation finished while A held the LV exclusively"
printf 'ok: B waits while A holds the registry LV (-aey)\n' | tee -a "$LAB_EVIDENCE"
on_ok "A: lets go of lab47/hsreg" A "$L lvchange -an lab47/hsreg" >/dev/null || lab_fail "A: lvchange -an"
wait "$pb" || lab_fail "B's allocation failed after A let go: $(cat "$LAB_OUT/B/ctl.err")"
lab_assert_eq "B got the first name once A let go" "$W0 mpatha" "$(cat "$LAB_OUT/B/ctl.out")"
lab_note "B waited $((SECONDS - t)) s in all"

# ------------------------------------------------------------------ 2 + 2 processes at once
# (every registry operation is an lvchange pair, ~2 s each under emulation on a loaded machine:
# 3 + 3 processes with 4 shared WWIDs passed too, in 501 s)
SHARED="36001405shr000001 36001405shr000002"
t=$SECONDS
on A --timeout 600 "$L s47_alloc 2 $SHARED" >/dev/null 2>&1 &
pa=$!
on B --timeout 600 "$L s47_alloc 2 $SHARED" >/dev/null 2>&1 &
pb=$!
wait "$pa"; ra=$?
wait "$pb"; rb=$?
alloc_s=$((SECONDS - t))
lab_note "4 processes (2 on A, 2 on B) allocated in ${alloc_s} s"
for h in A B; do on "$h" 'for f in alloc-*.err; do echo "== $f"; cat "$f"; done' >"$LAB_OUT/$h/alloc-errors.txt" 2>&1; done
lab_assert_eq "every allocating process on A and B succeeded" "0 0" "$ra $rb"

on A "$L hostsync --registry $URL --json alias list" >"$LAB_OUT/A/list.json" || lab_fail "A: alias list failed"
on B "$L hostsync --registry $URL --json alias list" >"$LAB_OUT/B/list.json" || lab_fail "B: alias list failed"

# The oracle: TABLE FILE -> "wwid alias" lines, sorted; checks on a table.
table() { jq -r '.[] | "\(.wwid) \(.alias)"' "$1" | sort; }
dup_names() { jq -r '.[].alias' "$1" | sort | uniq -d; }
dup_wwids() { jq -r '.[].wwid' "$1" | sort | uniq -d; }
# Positive controls: the checks see a duplicate name and a disagreement when there is one.
jq '.[1].alias = .[0].alias' "$LAB_OUT/A/list.json" >"$LAB_OUT/control-dup.json"
lab_assert_match "control: a doctored table's duplicate name is seen" '^mpath' "$(dup_names "$LAB_OUT/control-dup.json")"
jq '(.[0].alias, .[1].alias) = (.[1].alias, .[0].alias)' "$LAB_OUT/A/list.json" >"$LAB_OUT/control-swap.json"
[ "$(table "$LAB_OUT/A/list.json")" != "$(table "$LAB_OUT/control-swap.json")" ] \
  || lab_fail "control: two swapped names are not seen as a different table"
printf 'ok: control: a swapped pair of names makes a different table\n' | tee -a "$LAB_EVIDENCE"

table "$LAB_OUT/A/list.json" >"$LAB_OUT/table-A.txt"
table "$LAB_OUT/B/list.json" >"$LAB_OUT/table-B.txt"
lab_assert_eq "A and B list identical tables" "$(cat "$LAB_OUT/table-A.txt")" "$(cat "$LAB_OUT/table-B.txt")"
lab_assert_eq "WWIDs in the registry (1 control + 2 shared + 2 own on A + 2 own on B)" 7 "$(lab_count <"$LAB_OUT/table-A.txt")"
lab_assert_eq "no name has two WWIDs" "" "$(dup_names "$LAB_OUT/A/list.json")"
lab_assert_eq "no WWID has two names" "" "$(dup_wwids "$LAB_OUT/A/list.json")"
lab_assert_eq "the names are the lowest 7, each once" \
  "mpatha mpathb mpathc mpathd mpathe mpathf mpathg" \
  "$(awk '{ print $2 }' "$LAB_OUT/table-A.txt" | sort | tr '\n' ' ' | sed 's/ $//')"
for w in $SHARED; do
  lab_assert_eq "$w is in the registry" 1 "$(grep -c "^$w " "$LAB_OUT/table-A.txt")"
done
# Every process printed, for each of its WWIDs, the registry's name.
for h in A B; do
  for i in 1 2; do
    f="$LAB_OUT/$h/alloc-$i.out"
    lab_assert_eq "$h process $i printed 3 WWIDs" 3 "$(lab_count <"$f")"
    lab_assert_eq "$h process $i printed what the registry holds" "" "$(sort "$f" | comm -23 - "$LAB_OUT/table-A.txt")"
  done
done

# ------------------------------------------------------------------ the LV's header blocks
on A "$L lvchange -asy lab47/hsreg && dd if=/dev/mapper/lab47-hsreg bs=4096 count=2 iflag=direct 2>/dev/null | od -A d -t x1 | head -n 12; lvchange -an lab47/hsreg" \
  >"$LAB_OUT/A/header.txt" 2>&1
lab_assert_match "the LV starts with the registry's magic" '^0000000 48 53 59 4e 43 52 45 47' "$(cat "$LAB_OUT/A/header.txt")"

# ------------------------------------------------------------------ clean up
for h in A B; do
  on "$h" --timeout 120 "$L vgchange -an lab47; vgchange --lock-stop lab47" >/dev/null 2>&1
done
lab_note "scenario 47: allocation by 4 processes ${alloc_s} s; whole scenario $((SECONDS - T0)) s"
