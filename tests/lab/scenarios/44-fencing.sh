#!/bin/bash
# 44-fencing (issue 15, done-when item 3): host A loses its lease storage and is fenced before
# host B can take its LV; no write of A lands after B's acquisition.
#
# Shared VG vg44 (lvmlockd + sanlock, watchdog on: wdmd on softdog) on two hand-made dm
# multipath maps per host (2 paths each, queue_if_no_path): lab44-lun1 holds the VG's lvmlock LV
# (the lease storage; the lab's 64 MiB `lock` LUN is too small for it: sanlock puts the first LV
# lease at 67 x 1 MiB and lvmlock is 256 MiB), lab44-lun0 holds the data LV domu1. sanlock
# io_timeout T = 2 s (lvmlockd -o 2; Debian's default is 10): renewal every 2T = 4 s, kill
# (lvmlockctl --kill -> lvm.conf lvmlockctl_kill_command = "$LAB_BIN/hostsync fence") after
# 8T = 16 s without renewal, another host may take the leases 8T + 60 = 76 s after the last
# renewal (the watchdog fire timeout, 60 s, is fixed in sanlock 3.8.5).
#
# A: lvchange -aey vg44/domu1 and a writer of sequence-numbered 4 KiB O_DIRECT blocks (block i
# at offset i, carrying "seq=i t=<A's clock>"; A's log has every write's start, end and status).
# B is refused while A holds it. Then every path of A to lun1 goes away (A only). Checked:
# hostsync fence put domu1 on the error target (and lun0's map stopped queueing), A's writes
# fail from then on, lvmlockctl dropped the lockspace so A is not reset; B's `lvchange -aey`
# polls, refused until the takeover time, then succeeds; A's last successful write ended before
# B's first successful attempt started (clocks tied to this machine's); the data oracle: right
# after the acquisition B reads the region (what is on disk = A's log of completed writes), B
# overwrites it with its own marker, waits while A's writer keeps trying, reads again: every
# block is still B's (no late write of A landed). Positive control: A writes one A-block through
# lun0's map, bypassing the fenced LV; the same oracle must flag exactly that block.
#
# LVM runs with its own writable configuration (LVM_SYSTEM_DIR=/tmp/lab44-lvm, written here:
# the guests' /etc is this machine's).
# lab-timeout: 900
set -u
. "$LAB_HOSTS_LIB"
LAB_ON_ENV="LAB_BIN"
T=2
BLOCKS=1024   # region of domu1 the writer and the oracle use (4 MiB)
CONTROL=5     # block the positive control overwrites

# ------------------------------------------------------------------ guest-side helpers
cat >"$LAB_OUT/lab44.sh" <<'EOF'
# 44-fencing's guest-side helpers (sourced by each job).
export LVM_SYSTEM_DIR=/tmp/lab44-lvm LVM_SUPPRESS_FD_WARNINGS=1
L44_VG=vg44
L44_BLOCKS=1024

l44_conf() { # a writable LVM configuration: only our two maps, lvmlockd, the kill command
  mkdir -p "$LVM_SYSTEM_DIR" /run/lock/lvm /run/lvm
  cat >"$LVM_SYSTEM_DIR/lvm.conf" <<CONF
devices {
  global_filter = [ "a|^/dev/mapper/lab44-lun[01]\$|", "r|.*|" ]
  use_devicesfile = 0
  obtain_device_list_from_udev = 0
  multipath_component_detection = 0
  md_component_detection = 0
}
global {
  use_lvmlockd = 1
  event_activation = 0
  lvmlockctl_kill_command = "$LAB_BIN/hostsync fence"
}
activation {
  monitoring = 0
}
backup {
  backup = 0
  archive = 0
}
CONF
}

l44_maps() { # lab44-lun0, lab44-lun1: dm multipath over this host's 2 paths, queue_if_no_path
  local lun p devs n sect
  for lun in lun0 lun1; do
    devs="" n=0
    for p in $(san_lun_paths $lun); do devs+=" $(san_devno "$p") 1000"; n=$((n + 1)); done
    [ "$n" = 2 ] || lab_fail "$LAB_HOST: $n paths to $lun, not 2"
    sect=$(blockdev --getsz "/dev/$(san_lun_paths $lun | head -n1)")
    lab_expect_ok "$LAB_HOST: map lab44-$lun" dmsetup create "lab44-$lun" \
      --table "0 $sect multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1$devs"
    dmsetup mknodes "lab44-$lun"
  done
}

l44_start() { # HOST_ID: syslogd, wdmd + sanlock (watchdog on), lvmlockd -o T
  l44_conf
  l44_maps
  rm -f /dev/log
  san_service_start syslogd busybox syslogd -n -O "$LAB_OUT/syslog.log"
  san_sanlock_start
  san_service_start lvmlockd lvmlockd -f -g sanlock --host-id "$1" -o "$2"
  lab_wait "lvmlockd on $LAB_HOST answers" 30 lvmlockctl --info
  san_service_alive lvmlockd
}

l44_writer() { # DEV LOG
  local dev="$1" log="$2" i=0 t0 rc blk=/tmp/lab44-blk
  : >"$log"
  while [ ! -e /tmp/lab44-stop ] && [ "$i" -lt "$L44_BLOCKS" ]; do
    t0=$EPOCHREALTIME
    printf 'LAB44 A seq=%d t=%s\n' "$i" "$t0" >"$blk"
    truncate -s 4096 "$blk"
    dd if="$blk" of="$dev" bs=4096 seek="$i" count=1 oflag=direct status=none 2>/dev/null
    rc=$?
    echo "$i $t0 $EPOCHREALTIME $rc" >>"$log"
    if [ "$rc" = 0 ]; then i=$((i + 1)); else sleep 0.5; fi
  done
}

l44_acquire() { # poll lvchange -aey until it succeeds; one line per attempt
  local log="$LAB_OUT/acquire.log" t0 rc err
  : >"$log"
  while :; do
    t0=$EPOCHREALTIME
    err=$(lvchange -aey "$L44_VG/domu1" 2>&1)
    rc=$?
    echo "$t0 $EPOCHREALTIME $rc ${err//$'\n'/ | }" >>"$log"
    [ "$rc" = 0 ] && return 0
    sleep 1
  done
}

l44_wait_fenced() { # until domu1's live table is the error target; prints A's time then
  local i
  for i in $(seq 600); do
    if dmsetup table "$L44_VG-domu1" 2>/dev/null | grep -q ' error'; then echo "$EPOCHREALTIME"; return 0; fi
    sleep 0.2
  done
  return 1
}

l44_cleanup() { # both hosts: writer, queued I/O, locks, daemons, our dm devices (top down)
  local d
  touch /tmp/lab44-stop
  san_service_stop writer
  for d in lab44-lun0 lab44-lun1; do dmsetup message "$d" 0 fail_if_no_path 2>/dev/null; done
  lvchange -an "$L44_VG/domu1" 2>/dev/null
  vgchange --lock-stop "$L44_VG" 2>/dev/null
  san_service_stop lvmlockd
  san_sanlock_stop
  for d in "$L44_VG-domu1" "$L44_VG-lvmlock" lab44-lun0 lab44-lun1; do
    dmsetup info "$d" >/dev/null 2>&1 || continue
    dmsetup remove --retry "$d" 2>/dev/null || dmsetup remove --force "$d" 2>/dev/null
  done
  return 0
}

l44_dump() { # FILE: the region of domu1, O_DIRECT
  dd if="/dev/mapper/$L44_VG-domu1" of="$1" bs=4096 count="$L44_BLOCKS" iflag=direct status=none
}
EOF
g=". \"\$LAB_SHARED/lab44.sh\";"
cleanup() {
  on A --timeout 120 "$g l44_cleanup" >/dev/null 2>&1 &
  on B --timeout 120 "$g l44_cleanup" >/dev/null 2>&1
  wait
}
trap cleanup EXIT

# Clock offsets: guest clock - this machine's clock (midpoint of the job), with its error.
clock() { # H -> "offset error"
  local t0 t1 g
  t0=$(date +%s.%N)
  g=$(on "$1" 'echo $EPOCHREALTIME')
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v g="$g" 'BEGIN { printf "%.3f %.3f\n", g - (a + b) / 2, (b - a) / 2 }'
}

# ------------------------------------------------------------------ setup
on_ok "A: maps, syslogd, wdmd+sanlock (watchdog on), lvmlockd -o $T" A --timeout 180 "$g l44_start 1 $T" >/dev/null
on_ok "B: maps, syslogd, wdmd+sanlock (watchdog on), lvmlockd -o $T" B --timeout 180 "$g l44_start 2 $T" >/dev/null
on_ok "A: vgcreate --shared vg44 (lvmlock on lun1), lock-start" A --timeout 300 \
  "$g vgcreate --shared vg44 /dev/mapper/lab44-lun1 /dev/mapper/lab44-lun0 && vgchange --lock-start vg44" >/dev/null
on_ok "A: lvcreate vg44/domu1 on lun0 (active exclusively on A)" A --timeout 120 \
  "$g lvcreate -n domu1 -L 16M vg44 /dev/mapper/lab44-lun0" >/dev/null
on_ok "B: lock-start vg44 (joins the lockspace as host 2)" B --timeout 300 "$g vgchange --lock-start vg44" >/dev/null
on A "$g lvs -a -o lv_name,lv_attr,devices,lv_lock_args vg44; lvmlockctl --info; sanlock client status" >"$LAB_OUT/A/setup.txt" 2>&1
lab_assert_match "lvmlock is on lun1 (the lease storage A will lose)" 'lvmlock.*/dev/mapper/lab44-lun1' "$(grep lvmlock "$LAB_OUT/A/setup.txt")"
lab_assert_match "domu1 is on lun0 (A keeps its paths to it)" 'domu1.*/dev/mapper/lab44-lun0' "$(grep domu1 "$LAB_OUT/A/setup.txt")"
lab_assert_eq "A holds domu1 exclusively (lvs -o active_exclusively)" 1 \
  "$(on A "$g lvs --noheadings --binary -o lv_active_exclusively vg44/domu1 | tr -d ' '")"
start=$(on A "$g dmsetup table vg44-domu1")
echo "$start" >"$LAB_OUT/A/domu1-table-before.txt"
lab_assert_match "A: domu1 is linear on lab44-lun0" '^0 [0-9]+ linear [0-9]+:[0-9]+ [0-9]+$' "$start"
lab_assert_match "A: lun0's map queues when it has no path (before)" ' queue_if_no_path ' "$(on A 'dmsetup table lab44-lun0')"

# Refused on B while A holds it.
out=$(on B "$g lvchange -aey vg44/domu1" 2>&1) && lab_fail "B activated vg44/domu1 while A holds it: $out"
lab_assert_match "B: lvchange -aey refused while A holds domu1" 'locked by other host' "$out"

# ------------------------------------------------------------------ A writes, then loses lun1
read -r offA errA <<<"$(clock A)"
read -r offB errB <<<"$(clock B)"
on_ok "A: writer started on vg44/domu1" A "$g san_service_start writer bash -c '. \"\$LAB_SHARED/lab44.sh\"; l44_writer /dev/mapper/vg44-domu1 \"\$LAB_OUT/writes.log\"'" >/dev/null
for i in $(seq 120); do [ "$(lab_count 2>/dev/null <"$LAB_OUT/A/writes.log")" -ge 20 ] 2>/dev/null && break; sleep 1; done
lab_assert_eq "A: the writer's first 20 writes succeeded" 0 "$(head -n 20 "$LAB_OUT/A/writes.log" | awk '$4 != 0' | lab_count)"

# B polls from before the fault (refused while A renews its lease), until it gets the LV.
on B --timeout 600 "$g l44_acquire" >"$LAB_OUT/B/acquire.out" 2>&1 &
pb=$!
for i in $(seq 60); do [ "$(lab_count 2>/dev/null <"$LAB_OUT/B/acquire.log")" -ge 2 ] 2>/dev/null && break; sleep 1; done
# The fault: A's SCSI devices for both paths to lun1 deleted (sysfs, no udev wait); its time is
# taken before the first delete.
fault=$(on A 't=$EPOCHREALTIME; for d in $(san_lun_paths lun1); do echo 1 >/sys/block/$d/device/delete; done; echo $t')
lab_note "A lost every path to lun1 at A-time $fault"
lab_assert_eq "A: no path to lun1 left" "" "$(on A 'san_lun_paths lun1')"
lab_assert_eq "B still has both paths to lun1" 2 "$(on B 'san_lun_paths lun1 | lab_count')"
fenced=$(on A --timeout 200 "$g l44_wait_fenced") || lab_fail "A: vg44/domu1 never got the error target (see A/syslog.log, A/sanlock.log)"
lab_note "A: domu1 on the error target at A-time $fenced"
on A 'dmsetup table; dmsetup status' >"$LAB_OUT/A/dm-after-fence.txt" 2>&1
lab_assert_match "A: domu1's live table is the error target" '^vg44-domu1: 0 [0-9]+ error' "$(grep '^vg44-domu1:' "$LAB_OUT/A/dm-after-fence.txt")"
lab_assert_match "A: lun0's map is in the table listing" '^lab44-lun0: 0 [0-9]+ multipath' \
  "$(grep '^lab44-lun0: .* multipath' "$LAB_OUT/A/dm-after-fence.txt" | head -n1)"
lab_assert_eq "A: lun0's map no longer queues (the fence's fail_if_no_path)" 0 \
  "$(grep '^lab44-lun0: .* multipath' "$LAB_OUT/A/dm-after-fence.txt" | grep -c queue_if_no_path)"
wait "$pb" || lab_fail "B never acquired vg44/domu1 (see B/acquire.log)"

# ------------------------------------------------------------------ the data oracle
on_ok "B: region read right after the acquisition" B "$g l44_dump \"\$LAB_OUT/dump-acquired.bin\"" >/dev/null
on_ok "B: its marker written over the region (O_DIRECT)" B \
  "printf 'LAB44 B marker\n' >/tmp/m; truncate -s 4096 /tmp/m; for i in 1 2 3 4 5 6 7 8 9 10; do cat /tmp/m /tmp/m >/tmp/m2; mv /tmp/m2 /tmp/m; done; dd if=/tmp/m of=/dev/mapper/vg44-domu1 bs=4096 count=$BLOCKS oflag=direct status=none" >/dev/null
sleep 8 # A's writer keeps trying meanwhile
on_ok "B: region read again" B "$g l44_dump \"\$LAB_OUT/dump-after.bin\"" >/dev/null
a_alive=1
if on A true >/dev/null 2>&1; then
  on_ok "A: writer stopped" A 'touch /tmp/lab44-stop; san_service_stop writer' >/dev/null
  sector=$(awk '{ print $5 }' <<<"$start")
  on_ok "control: A writes one A-block through lab44-lun0, bypassing the fenced LV" A \
    "printf 'LAB44 A seq=999999 t=%s\n' \$EPOCHREALTIME >/tmp/c; truncate -s 4096 /tmp/c; dd if=/tmp/c of=/dev/mapper/lab44-lun0 bs=4096 seek=$((sector / 8 + CONTROL)) count=1 oflag=direct status=none" >/dev/null
else
  a_alive=0
  lab_note "host A is down (its watchdog reset it): the control block is written by B instead"
  on_ok "control: B writes one A-block into domu1" B \
    "printf 'LAB44 A seq=999999 t=0\n' >/tmp/c; truncate -s 4096 /tmp/c; dd if=/tmp/c of=/dev/mapper/vg44-domu1 bs=4096 seek=$CONTROL count=1 oflag=direct status=none" >/dev/null
fi
on_ok "B: region read after the control write" B "$g l44_dump \"\$LAB_OUT/dump-control.bin\"" >/dev/null
read -r offA2 errA2 <<<"$( ((a_alive)) && clock A || echo "$offA $errA")"
read -r offB2 errB2 <<<"$(clock B)"

# The oracle and the timeline (this machine's clock; each guest's offset measured before and
# after, its error is half a job's round trip).
python3 - "$LAB_OUT" "$fault" "$fenced" "$offA" "$errA" "$offA2" "$errA2" "$offB" "$errB" "$offB2" "$errB2" "$T" "$CONTROL" \
  >"$LAB_OUT/oracle.txt" 2>&1 <<'EOF'
import sys, re
out, fault, fenced = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
offA, errA, offA2, errA2, offB, errB, offB2, errB2 = map(float, sys.argv[4:12])
T, control = int(sys.argv[12]), int(sys.argv[13])
oA, eA = (offA + offA2) / 2, max(errA, errA2) + abs(offA - offA2) / 2
oB, eB = (offB + offB2) / 2, max(errB, errB2) + abs(offB - offB2) / 2
ok = True
def check(cond, msg):
    global ok
    print(("ok: " if cond else "FAIL: ") + msg)
    ok = ok and cond
A = lambda t: t - oA      # A's clock -> this machine's
B = lambda t: t - oB
w = [l.split() for l in open(f"{out}/A/writes.log")]
w = [(int(s), float(a), float(b), int(r)) for s, a, b, r in w]
good = [x for x in w if x[3] == 0]
bad = [x for x in w if x[3] != 0]
att = []
for l in open(f"{out}/B/acquire.log"):
    p = l.split(" ", 3)
    att.append((float(p[0]), float(p[1]), int(p[2]), p[3].strip() if len(p) > 3 else ""))
acq = [a for a in att if a[2] == 0]
check(len(acq) == 1 and att[-1][2] == 0, f"B acquired vg44/domu1 after {len(att) - 1} refused attempt(s)")
t0 = A(fault)
acq_start, acq_end = B(acq[-1][0]), B(acq[-1][1])
refused_after = [a for a in att if a[2] != 0 and B(a[0]) > t0]
check(len(refused_after) > 0 and all("locked by other host" in a[3] for a in refused_after),
      f"B was refused ({len(refused_after)} attempts after the fault, each 'LV locked by other host') until the takeover")
last_ok = good[-1]
check(len(bad) > 0, f"A's writes fail after the fence ({len(bad)} failed attempts, first at A-seq {bad[0][0] if bad else '-'})")
check(last_ok[0] < 1023, "A's writer did not merely run out of blocks")
margin = eA + eB
check(A(last_ok[2]) + margin < acq_start,
      f"A's last successful write ended {acq_start - A(last_ok[2]):.1f} s before B's successful attempt started (clock error {margin:.2f} s)")
check(bad and A(bad[0][1]) + margin < acq_start, "A's writes were failing before B acquired")
check(bad and A(bad[0][1]) > t0 + 8 * T - 2 * T - margin,
      f"A's writes failed from {A(bad[0][1]) - t0:.1f} s after the fault (the fence runs 8T = {8*T} s after the last renewal), not before")
host_dead = 8 * T + 60
check(acq_start - t0 >= host_dead - 2 * T - 4,
      f"B acquired {acq_start - t0:.1f} s after the fault (takeover time 8T+60 = {host_dead} s after A's last renewal, renewals every {2*T} s)")

def blocks(path):
    d = open(path, "rb").read()
    res = []
    for i in range(len(d) // 4096):
        h = d[i * 4096:i * 4096 + 80].split(b"\n")[0]
        m = re.match(rb"LAB44 A seq=(\d+) t=([\d.]+)", h)
        if m:
            res.append(("A", int(m.group(1)), float(m.group(2))))
        elif h.startswith(b"LAB44 B marker"):
            res.append(("B", None, None))
        elif d[i * 4096:(i + 1) * 4096].strip(b"\0") == b"":
            res.append(("0", None, None))
        else:
            res.append(("?", h[:40], None))
    return res
acquired = blocks(f"{out}/B/dump-acquired.bin")
on_disk = [(i, b) for i, b in enumerate(acquired) if b[0] == "A"]
L = last_ok[0]
check(all(b[1] == i for i, b in on_disk), "every A-block on disk sits at its own sequence number")
check(all(acquired[i][0] == "A" for i in range(L + 1)), f"every write A logged as completed (seq 0..{L}) is on disk")
extra = [i for i, b in on_disk if i > L]
check(len(extra) <= 1, f"on disk beyond A's last completed write: {extra} (at most the one in flight at the fence)")
check(all(b[0] in "A0" for b in acquired), "nothing but A-blocks and zeros in the region at the acquisition")
last_disk = max((b[2] for _, b in on_disk), default=0)
def late(path):
    return [(i, b) for i, b in enumerate(blocks(path)) if b[0] != "B"]
after = late(f"{out}/B/dump-after.bin")
check(after == [], f"no block of A landed after B's acquisition (blocks not B's after its overwrite: {after[:5]})")
ctl = late(f"{out}/B/dump-control.bin")
check([(i, b[1]) for i, b in ctl] == [(control, 999999)],
      f"positive control: the oracle flags exactly the block written around the fence: {[(i, b[1]) for i, b in ctl][:5]}")
print()
print("timeline (seconds from A losing its paths to lun1; this machine's clock)")
rows = [
    (0.0, "A: every path to lun1 (the lease storage) deleted"),
    (A(good[0][1]) - t0, "A: writer's first write"),
    (A(last_ok[2]) - t0, f"A: last successful write ends (seq {L}; on disk the newest A-block says A-time {last_disk - fault:+.2f})"),
    (A(bad[0][1]) - t0 if bad else float('nan'), "A: first failed write (EIO from the error target)"),
    (A(fenced) - t0, "A: vg44/domu1's live table seen as the error target (polled)"),
    (B(refused_after[0][0]) - t0 if refused_after else float('nan'), "B: first lvchange -aey after the fault (refused)"),
    (acq_start - t0, "B: successful lvchange -aey starts"),
    (acq_end - t0, f"B: ...returns, B holds vg44/domu1 (takeover time 8T+60 = {host_dead} s, T = {T} s)"),
]
import datetime
year = datetime.datetime.fromtimestamp(fault, datetime.timezone.utc).year
for l in open(f"{out}/A/syslog.log", errors="replace"):
    for key, what in (("lost access to locks", "A: sanlock gave up renewing: lvmlockctl --kill vg44 (syslog, 1 s resolution)"),
                      ("fencing VG", "A: hostsync fence vg44 starts (syslog)"),
                      ("FENCED vg44/domu1", "A: hostsync fence: vg44/domu1 on the error target (syslog)"),
                      ("Successful VG vg44 kill command", "A: lvmlockctl: kill command exit 0, drops the VG's locks (syslog)")):
        if key in l:
            ts = datetime.datetime.strptime(f"{year} {l[:15]}", "%Y %b %d %H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
            rows.append((A(ts) - t0, what))
for t, what in sorted(rows, key=lambda r: r[0]):
    print(f"  {t:8.2f}  {what}")
print(f"clock offsets: A {oA:+.3f} s (+-{eA:.3f}), B {oB:+.3f} s (+-{eB:.3f})")
sys.exit(0 if ok else 1)
EOF
orc=$?
cat "$LAB_OUT/oracle.txt"
cat "$LAB_OUT/oracle.txt" >>"$LAB_EVIDENCE"
[ "$orc" = 0 ] || lab_fail "the data oracle failed (see oracle.txt)"
if ((a_alive)); then
  on A 'sanlock client status; lvmlockctl --info; wdmd --dump' >"$LAB_OUT/A/after.txt" 2>&1
  grep -a -E 'hostsync|lvmlockctl|sanlock|lvmlockd' "$LAB_OUT/A/syslog.log" >"$LAB_OUT/A/fence-syslog.txt" 2>/dev/null
  lab_assert_match "A's syslog names the fenced LV (hostsync fence)" 'FENCED vg44/domu1' "$(cat "$LAB_OUT/A/fence-syslog.txt")"
  # lvmlockctl --kill ran hostsync fence, took its exit 0 and dropped the VG's locks itself; so
  # sanlock released the lockspace and the watchdog did not reset A (alive well past 8T+60).
  lab_assert_match "A: lvmlockctl --kill ran the kill command successfully" 'Successful VG vg44 kill command .*hostsync fence vg44' \
    "$(cat "$LAB_OUT/A/fence-syslog.txt")"
  lab_assert_eq "A: lvmlockctl did not fail to drop the locks" 0 "$(grep -c 'Failed to drop locks' "$LAB_OUT/A/fence-syslog.txt")"
fi

# ------------------------------------------------------------------ leave both hosts up
# (the EXIT trap cleans both hosts up: queued I/O failed, locks stopped, daemons, our maps)
((a_alive)) || lab_fail "host A was reset by its watchdog: the fence did not let lvmlockctl drop the lockspace in time"
exit 0
