#!/bin/bash
# 45-migration-handoff (issue 16, done-when 3): a running domU's disk moves from host A to host
# B by `hostsync migrate run web1 --to B`, and at no moment do both hosts hold it exclusively.
#
# Setup (43's style: sanlock io_timeout 2 s = lvmlockd -o 2; sanlock without its watchdog,
# fencing is 44's subject): etcd on A is the registry. A makes a dm multipath map of lun0 by
# hand (san_mpath_create); B runs multipathd-rs with [cluster] (as in 46) because `migrate run`
# first checks B's published paths, and hosts/B/state is written only by the daemon. Shared VG
# vg45 on lun0 with one LV, web1 (16 MiB); both lockspaces started; B's LVM published.
#
# Stand-ins (the lab has no Xen and no sshd; each does what its real counterpart does at the
# point the issue names, nothing more):
# - the domU web1: domu.py, a process that holds the LV open (O_RDWR|O_DIRECT) and writes
#   sequence-numbered 4 KiB blocks every 0.1 s (block i at offset i, saying seq=i and the host);
#   its write log lists every completed write. SIGUSR1 suspends it (the block in flight ends,
#   fsync, its next sequence number is written out: the state a migration stream carries),
#   SIGUSR2 resumes it, SIGTERM destroys it (closes the LV). It opens the device the block
#   script reported in xenstore (physical-device-path), as blkback does.
# - xenstore: xenstore-read/xenstore-write on PATH keeping each host's store in files on its
#   own tmpfs and recording every call (as hostsync/tests/block_script.rs does).
# - libxl running the hotplug script: contrib/xen/block-hostsync `add|remove`, stdin
#   /dev/null, environment only script, XENBUS_TYPE, XENBUS_PATH=backend/vbd/<domid>/51712,
#   XENBUS_BASE_PATH and PATH; hostsync configured through /etc/default/hostsync (san_etc_put).
#   The domU's xenstore entries (name, params) are written first, as xl does.
# - `xl migrate` (--migrate-command bin/xl-migrate), in the order the issue gives: suspend the
#   writer on A; stream its state (a file on the results share); on B run block-hostsync add
#   for web1--incoming (xl's name for the incoming domain) as the destination of the
#   registered migration; start the writer on B from the streamed sequence number and wait for
#   its first block (B reported success); destroy A's writer, run A's block-hostsync remove.
#   A failed step resumes A's writer and exits 1 (xl resumes the source without hooks).
# - ssh (--remote): tests/lab/guest/lab-on, which runs a command on the other guest through
#   the lab's job queue. The domU's configuration is given with --domu-config (no `xl list`).
#
# Checked (oracles in oracle.txt, the handoff's timeline in timeline.txt):
# - sampler: both hosts record sanlock's mode of web1's lease (`sanlock client status`: ex, sh
#   or none) every 0.2 s through the handoff; on this machine's clock (offsets measured before
#   and after, with their error) no exclusive period of A overlaps one of B. Positive controls:
#   A's samples read ex, sh, none and B's none, sh, ex, in that order (the sampler sees every
#   mode); the overlap check flags a doctored B ex sample placed in A's exclusive period.
# - B ends exclusive (B's sampler, lvs lv_active_exclusively on B, LV inactive on A), the
#   migration record is finished (migrate run exits 0 saying so), A's hotplug remove succeeded.
# - data oracle (disk read back on B after the handoff): sequence numbers contiguous, each
#   block exactly once, A's blocks then B's, each on disk written by the host whose write log
#   has it, nothing beyond; controls: a doctored doubled block (B resumed one early), a lost
#   block (B resumed one late) and a late A write over B's first block are each flagged.
# - a later normal start on A (block-hostsync add) is refused: exit 1, hotplug-error naming B,
#   hotplug-status error, nothing activated; LVM itself refuses A a shared activation.
# lab-timeout: 600
set -u
. "$LAB_HOSTS_LIB"

LAB_SAN_IO_TIMEOUT=2 # sanlock io_timeout (lvmlockd -o), passed to every job
LAB_ON_ENV="LAB_SAN_IO_TIMEOUT"
REG="etcd://10.99.0.1:2379" # etcd on A
g=". \"\$LAB_SHARED/lab45.sh\";"
t_start=$SECONDS
mkdir -p "$LAB_OUT/bin"

# ------------------------------------------------------------------ stand-ins and helpers
cat >"$LAB_OUT/bin/xenstore-read" <<'EOF'
#!/bin/sh
# xenstore-read stand-in (lab 45): the store is files under /tmp/lab45/xs on this guest;
# relative paths are under dom0's home (/local/domain/0). Every call is recorded. No forks:
# hostsync gives a xenstore call 5 s, and a fork costs a lot on a loaded emulated guest.
echo "xenstore-read $*" >>/tmp/lab45/xs-calls
for p in "$@"; do
  case "$p" in /*) k="${p#/}" ;; *) k="local/domain/0/$p" ;; esac
  [ -f "/tmp/lab45/xs/$k" ] || { echo "could not read path $p" >&2; exit 1; }
  v=""
  { IFS= read -r v || [ -n "$v" ]; } <"/tmp/lab45/xs/$k"
  printf '%s\n' "$v"
done
EOF
cat >"$LAB_OUT/bin/xenstore-write" <<'EOF'
#!/bin/sh
# xenstore-write stand-in (lab 45): KEY VALUE pairs into /tmp/lab45/xs; every call recorded.
# Forks only to make a new directory (see xenstore-read).
while [ $# -ge 2 ]; do
  echo "xenstore-write $1 $2" >>/tmp/lab45/xs-calls
  case "$1" in /*) k="${1#/}" ;; *) k="local/domain/0/$1" ;; esac
  [ -d "/tmp/lab45/xs/${k%/*}" ] || mkdir -p "/tmp/lab45/xs/${k%/*}"
  printf %s "$2" >"/tmp/lab45/xs/$k"
  shift 2
done
EOF
cat >"$LAB_OUT/bin/xl-migrate" <<'EOF'
#!/bin/bash
# `xl migrate DOMU HOST` stand-in (lab 45, see the scenario's header), run by hostsync migrate
# run on the source host. Every step is timed (this guest's clock) in xl-migrate.log.
domu="$1" to="$2"
. "$LAB_LIB"; . "$LAB_SAN_LIB"; . "$LAB_SHARED/lab45.sh"
on="$LAB_WS/tests/lab/guest/lab-on"
g=". \"\$LAB_SHARED/lab45.sh\";"
step() { echo "$EPOCHREALTIME $*" >>"$LAB_OUT/xl-migrate.log"; echo "xl-migrate stand-in: $*" >&2; }
fail() { step "FAILED: $*; $domu resumes on $LAB_HOST"; l45_domu_resume; exit 1; }
step "suspending $domu on $LAB_HOST"
l45_domu_suspend || fail "$domu did not suspend"
cp "$LAB_OUT/domu.state" "$LAB_SHARED/stream" || fail "no state to stream"
step "$domu suspended at seq $(cat "$LAB_SHARED/stream"); stream sent to $to"
"$on" "$to" "$g l45_domain 7 $domu--incoming && l45_hotplug add 7" || fail "the block script on $to refused the disk"
step "the block script on $to attached the disk"
"$on" "$to" "$g l45_domu_start 7 \$(cat \"\$LAB_SHARED/stream\")" || fail "$domu did not start on $to"
step "$domu runs on $to (its first block written)"
l45_domu_destroy
step "$domu destroyed on $LAB_HOST"
l45_hotplug remove 5
echo $? >"$LAB_OUT/remove.rc"
step "block script remove on $LAB_HOST exited $(cat "$LAB_OUT/remove.rc")"
exit 0
EOF
chmod +x "$LAB_OUT/bin/"*

cat >"$LAB_OUT/domu.py" <<'EOF'
# The stand-in domU of lab 45: DEV HOST FIRST_SEQ LOG STATE BLOCKS (see the scenario header).
import mmap, os, signal, sys, time
dev, host, seq, log, state, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
BS = 4096
fd = os.open(dev, os.O_RDWR | os.O_DIRECT)  # held open until destroyed
buf = mmap.mmap(-1, BS)                       # page-aligned, as O_DIRECT needs
flag = {"suspend": False, "destroy": False}
signal.signal(signal.SIGUSR1, lambda *_: flag.update(suspend=True))
signal.signal(signal.SIGUSR2, lambda *_: flag.update(suspend=False))
signal.signal(signal.SIGTERM, lambda *_: flag.update(destroy=True))
out = open(log, "a", buffering=1)
saved = False
while not flag["destroy"]:
    if flag["suspend"]:
        if not saved:  # what the migration stream carries
            os.fsync(fd)
            with open(state + ".tmp", "w") as f:
                f.write(f"{seq}\n")
            os.rename(state + ".tmp", state)
            saved = True
        time.sleep(0.05)
        continue
    if saved:  # resumed here
        os.unlink(state)
        saved = False
    if seq >= blocks:
        time.sleep(0.1)
        continue
    hdr = f"LAB45 seq={seq:08d} host={host} t={time.time():.6f}\n".encode()
    buf.seek(0)
    buf.write(hdr.ljust(BS - 1, b".") + b"\n")
    try:
        os.pwrite(fd, buf, seq * BS)
    except OSError as e:
        out.write(f"E {seq} {e.errno}\n")
        time.sleep(0.5)
        continue
    out.write(f"{seq} {time.time():.6f}\n")
    seq += 1
    time.sleep(0.1)
os.close(fd)
EOF

cat >"$LAB_OUT/lab45.sh" <<'EOF'
# 45-migration-handoff's guest-side helpers (sourced by each job and by bin/xl-migrate).
L45=/tmp/lab45                  # this host's xenstore (xs/, xs-calls)
L45_BIN="$LAB_SHARED/bin"       # xenstore-read, xenstore-write, xl-migrate
L45_BLOCKS=4096                 # web1 is 16 MiB
mkdir -p "$L45/xs"

# l45_domain DOMID NAME: the domain's xenstore entries xl writes before the hotplug script runs.
l45_domain() {
  PATH="$L45_BIN:$PATH" xenstore-write "/local/domain/$1/name" "$2" \
    "backend/vbd/$1/51712/params" /dev/vg45/web1 "backend/vbd/$1/51712/mode" w
}
# l45_hotplug add|remove DOMID: block-hostsync run as libxl runs it.
l45_hotplug() {
  env -i PATH="$L45_BIN:/usr/sbin:/usr/bin:/sbin:/bin" script=/etc/xen/scripts/block-hostsync \
    XENBUS_TYPE=vbd XENBUS_PATH="backend/vbd/$2/51712" XENBUS_BASE_PATH=backend \
    "$LAB_WS/contrib/xen/block-hostsync" "$1" </dev/null
}
# l45_xs DOMID KEY: a backend key of the domain's disk ("" if absent).
l45_xs() { cat "$L45/xs/local/domain/0/backend/vbd/$1/51712/$2" 2>/dev/null; }
# l45_defaults: /etc/default/hostsync, which block-hostsync sources (hostsync, the registry,
# this host's name, the lab's LVM configuration).
l45_defaults() {
  printf 'HOSTSYNC=%s\nHOSTSYNC_OPTS="--registry %s --host %s"\nexport LVM_SYSTEM_DIR=%s\n' \
    "$LAB_BIN/hostsync" "etcd://10.99.0.1:2379" "$LAB_HOST" "$LAB_SAN_LVM_DIR" | san_etc_put /etc/default/hostsync
}
# l45_domu_start DOMID SEQ: the domU's writer (service domu) on the device the block script
# reported, from sequence number SEQ; returns once its first block is written.
l45_domu_start() {
  local dev
  dev="$(l45_xs "$1" physical-device-path)"
  [ -b "$dev" ] || lab_fail "$LAB_HOST: no attached device for domain $1 (physical-device-path '$dev')"
  : >"$LAB_OUT/writes.log"
  rm -f "$LAB_OUT/domu.state"
  san_service_start domu python3 -S "$LAB_SHARED/domu.py" "$dev" "$LAB_HOST" "$2" \
    "$LAB_OUT/writes.log" "$LAB_OUT/domu.state" "$L45_BLOCKS"
  lab_wait "$LAB_HOST: the domU's first block" 60 test -s "$LAB_OUT/writes.log"
}
l45_domu_suspend() {
  kill -USR1 "$(san_service_pid domu)" || return 1
  lab_wait "$LAB_HOST: the domU suspended" 30 test -s "$LAB_OUT/domu.state"
}
# l45_lines FILE: its number of lines (0 if absent), read again at every call (for lab_poll).
l45_lines() { if [ -e "$1" ]; then lab_count <"$1"; else echo 0; fi; }
# l45_has_map LUN: this host has a multipath map of LUN.
l45_has_map() { [ -n "$(lab_mpath_of_wwid "$(san_udev_wwid "$1")")" ]; }
l45_domu_resume() { kill -USR2 "$(san_service_pid domu)"; }
l45_domu_destroy() { san_service_stop domu; }
# l45_sampler LV_UUID: every 0.2 s "<this guest's time> ex|sh|none", sanlock's mode of the LV's
# lease (its `r` line: "...:SH p PID" shared, "...:<lver> p PID" exclusive), to samples.txt.
l45_sampler() {
  local t s line m
  mkfifo /run/lab/l45-tick 2>/dev/null
  exec 7<>/run/lab/l45-tick
  while :; do
    t=$EPOCHREALTIME
    s="$(sanlock client status 2>&1)"
    m=none
    while IFS= read -r line; do
      case "$line" in "r "*"$1"*) case "$line" in *":SH p "*) m=sh ;; *) m=ex ;; esac ;; esac
    done <<<"$s"
    echo "$t $m" >>"$LAB_OUT/samples.txt"
    read -r -t 0.2 -u 7 _
  done
}
EOF

cat >"$LAB_OUT/oracle.py" <<'EOF'
# 45-migration-handoff's oracles. `samples OUT offA errA offB errB`, `data OUT`: exit 1 on a
# fault; each also runs its positive controls (doctored inputs the same check must flag).
import re, sys

def collapse(modes):
    out = []
    for m in modes:
        if not out or out[-1] != m:
            out.append(m)
    return out

def read_samples(path, off):
    s = []
    for l in open(path):
        t, m = l.split()
        s.append((float(t) - off, m))
    return s

def periods(s, err, want):
    """Periods where the mode is in `want`, widened to the neighbouring samples and the clock error."""
    ps, i = [], 0
    while i < len(s):
        if s[i][1] in want:
            j = i
            while j + 1 < len(s) and s[j + 1][1] in want:
                j += 1
            lo = s[i - 1][0] if i > 0 else float("-inf")
            hi = s[j + 1][0] if j + 1 < len(s) else float("inf")
            ps.append((lo - err, hi + err))
            i = j + 1
        else:
            i += 1
    return ps

def overlaps(pa, pb):
    return [(a, b) for a in pa for b in pb if a[0] < b[1] and b[0] < a[1]]

def gap(pa, pb):
    """The smallest distance between a period of pa and one of pb (negative: they overlap)."""
    g = float("inf")
    for a in pa:
        for b in pb:
            g = min(g, max(b[0] - a[1], a[0] - b[1]))
    return g

def samples(out, oA, eA, oB, eB):
    A = read_samples(f"{out}/A/samples.txt", oA)
    B = read_samples(f"{out}/B/samples.txt", oB)
    ok = True
    def check(c, msg):
        nonlocal ok
        print(("ok: " if c else "FAIL: ") + msg)
        ok = ok and c
    t0 = min(A[0][0], B[0][0])
    print(f"samples: A {len(A)}, B {len(B)}; clock offsets (guest - this machine): A {oA:+.3f} s +-{eA:.3f}, B {oB:+.3f} s +-{eB:.3f}")
    print("timeline (seconds from the first sample, this machine's clock; mode changes only):")
    steps = []  # the xl migrate stand-in's steps, on A's clock
    try:
        for l in open(f"{out}/A/xl-migrate.log"):
            t, text = l.rstrip("\n").split(" ", 1)
            steps.append((float(t) - oA, "A", "xl-migrate: " + text))
    except OSError:
        pass
    ev = sorted([(t, "A", m) for t, m in A] + [(t, "B", m) for t, m in B] + steps)
    last = {}
    for t, h, m in ev:
        if m.startswith("xl-migrate: ") or last.get(h) != m:
            print(f"  {t - t0:8.3f}  {h}: {m}")
            if not m.startswith("xl-migrate: "):
                last[h] = m
    exA, exB = periods(A, eA, {"ex"}), periods(B, eB, {"ex"})
    bad = overlaps(exA, exB)
    check(not bad, f"no moment with both hosts exclusive (A's exclusive periods {fmt(exA, t0)}, B's {fmt(exB, t0)}; closest {gap(exA, exB):.3f} s apart)")
    # Stricter, recorded: an exclusive holder beside any holder of the other host.
    anyA, anyB = periods(A, eA, {"ex", "sh"}), periods(B, eB, {"ex", "sh"})
    print(f"note: exclusive beside any lock of the other host: A ex vs B held {gap(exA, anyB):.3f} s apart, B ex vs A held {gap(exB, anyA):.3f} s apart (negative = within the clock and sampling error)")
    # Positive controls: the sampler saw every mode, in the handoff's order.
    check(collapse([m for _, m in A]) == ["ex", "sh", "none"], f"control: A's samples read ex, sh, none in order (saw {collapse([m for _, m in A])})")
    check(collapse([m for _, m in B]) == ["none", "sh", "ex"], f"control: B's samples read none, sh, ex in order (saw {collapse([m for _, m in B])})")
    # Positive control: a B ex sample doctored into A's first exclusive period is flagged.
    firstA = next(t for t, m in A if m == "ex")
    Bd = sorted(B + [(firstA, "ex")])
    check(bool(overlaps(exA, periods(Bd, eB, {"ex"}))), "control: a doctored B exclusive sample inside A's exclusive period is flagged")
    return ok

def fmt(ps, t0):
    return ", ".join(f"[{a - t0:.2f}, {b - t0:.2f}]" for a, b in ps) or "none"

HDR = re.compile(rb"LAB45 seq=(\d{8}) host=([AB]) t=[0-9.]+\n")

def parse_disk(raw):
    blocks = []
    for i in range(0, len(raw) - len(raw) % 4096, 4096):
        b = raw[i:i + 4096]
        if b == bytes(4096):
            blocks.append(None)
            continue
        m = HDR.match(b)
        if not m or b[m.end():] != b"." * (4095 - m.end()) + b"\n":
            blocks.append(("garbled", "?"))
            continue
        blocks.append((int(m.group(1)), m.group(2).decode()))
    return blocks

def read_log(path):
    seqs, errs = [], []
    for l in open(path):
        p = l.split()
        if p and p[0] == "E":
            errs.append(l.strip())
        elif p:
            seqs.append(int(p[0]))
    return seqs, errs

def data_faults(blocks, la, lb, h):
    """Everything wrong with the handoff's data; [] when clean. h = the streamed sequence number."""
    f = []
    both = sorted(set(la) & set(lb))
    if both:
        f.append(f"doubled: seq {both[:5]} written by A and by B")
    for name, l in (("A", la), ("B", lb)):
        dup = sorted({s for s in l if l.count(s) > 1})
        if dup:
            f.append(f"doubled: {name} wrote seq {dup[:5]} twice")
    n = max(la + lb) + 1 if la + lb else 0
    lost = sorted(set(range(n)) - set(la) - set(lb))
    if lost:
        f.append(f"lost: seq {lost[:5]} written by nobody")
    if la != list(range(len(la))):
        f.append("A's writes are not 0, 1, 2, ... in order")
    if lb != list(range(h, h + len(lb))):
        f.append(f"B's writes do not run from the streamed seq {h} on, in order")
    if la and la[-1] != h - 1:
        f.append(f"A's last write {la[-1]} is not the one before the streamed seq {h}")
    owner = {s: "A" for s in la}
    owner.update({s: "B" for s in lb if s not in owner})
    for i, b in enumerate(blocks):
        want = (i, owner[i]) if i in owner else None
        if b != want:
            f.append(f"block {i} on disk is {b}, the write logs say {want}")
            if len(f) > 12:
                break
    return f

def data(out):
    raw = open(f"{out}/B/disk.bin", "rb").read()
    la, ea = read_log(f"{out}/A/writes.log")
    lb, eb = read_log(f"{out}/B/writes.log")
    h = int(open(f"{out}/stream").read())
    blocks = parse_disk(raw)
    ok = True
    def check(c, msg):
        nonlocal ok
        print(("ok: " if c else "FAIL: ") + msg)
        ok = ok and c
    check(not ea and not eb, f"no write error on either host (A: {ea[:3]}, B: {eb[:3]})")
    check(len(la) >= 10 and len(lb) >= 10, f"both hosts wrote (A {len(la)} blocks, B {len(lb)})")
    f = data_faults(blocks, la, lb, h)
    check(not f, f"data: seq 0..{h - 1} from A then {h}..{h + len(lb) - 1} from B, each exactly once on disk, nothing beyond ({len(blocks)} blocks read)" + ("" if not f else ": " + "; ".join(f)))
    # Positive controls: the same check on doctored copies.
    def doctored(desc, kind, blocks2, la2, lb2):
        f2 = data_faults(blocks2, la2, lb2, h)
        check(any(x.startswith(kind) or kind in x for x in f2), f"control: {desc} is flagged ({'; '.join(f2[:2]) or 'NOT flagged'})")
    if la and lb:
        b2 = list(blocks); b2[h - 1] = (h - 1, "B")
        doctored("a doubled block (B resumed at the last seq A wrote)", "doubled", b2, la, [h - 1] + lb)
        b3 = list(blocks); b3[h] = None
        doctored("a lost block (B resumed one seq late)", "lost", b3, la, lb[1:])
        b4 = list(blocks); b4[h] = (h, "A")
        doctored("a late A write over B's first block", f"block {h} on disk", b4, la, lb)
    return ok

if __name__ == "__main__":
    if sys.argv[1] == "samples":
        ok = samples(sys.argv[2], *map(float, sys.argv[3:7]))
    else:
        ok = data(sys.argv[2])
    sys.exit(0 if ok else 1)
EOF

# At exit, pass or fail: the domU and the samplers stopped, web1 deactivated, the lockspaces
# left (lvmlockd does not exit while one is started, and an LV left active keeps its map open,
# so the teardown would leave lun0's map behind for the next scenario).
cleanup() {
  on_both --timeout 120 "$g san_service_stop domu; san_service_stop sampler; vgchange -an vg45; vgchange --lock-stop vg45" >/dev/null 2>&1 \
    || lab_note "the lockspaces were not left cleanly"
}
trap cleanup EXIT

# Clock offset of host H: guest clock - this machine's clock (midpoint of the job), error.
clock() {
  local t0 t1 gt
  t0=$(date +%s.%N)
  gt=$(on "$1" 'echo $EPOCHREALTIME')
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v g="$gt" 'BEGIN { printf "%.3f %.3f\n", g - (a + b) / 2, (b - a) / 2 }'
}

# ------------------------------------------------------------------ setup
on A --timeout 120 san_etcd_start >/dev/null 2>"$LAB_OUT/A/etcd-start.err" &
p_etcd=$!
on_both --timeout 150 "$g san_lvm_conf && san_sanlock_daemon 0 && san_lvmlockd_start && l45_defaults" >/dev/null \
  || lab_fail "sanlock, lvmlockd or /etc/default/hostsync did not start on both hosts (see evidence.log)"
wait "$p_etcd" || lab_fail "A: etcd did not start (see A/etcd-start.err)"
printf 'ok: A: etcd (the registry); both: sanlock, lvmlockd -o %s, LVM configuration, /etc/default/hostsync\n' "$LAB_SAN_IO_TIMEOUT" | tee -a "$LAB_EVIDENCE"
on B "mkdir -p \"\$LAB_MPD_DIR\"; printf '[cluster]\nregistry = \"%s\"\nname = \"lab45\"\nhost = \"B\"\npublish_interval = 2\n' '$REG' >\"\$LAB_MPD_DIR/config.toml\"" \
  || lab_fail "B: cannot write the daemon's configuration"
on B --timeout 200 "$g san_mpd_start && lab_wait 'the map of lun0' 150 l45_has_map lun0" \
  >/dev/null 2>"$LAB_OUT/B/mpd-start.err" &
p_mpd=$!
on_ok "A: map mpatha (lun0), vgcreate --shared vg45 (starts its lockspace), lvcreate web1" A --timeout 240 \
  'san_mpath_create mpatha lun0 && vgcreate --shared vg45 /dev/mapper/mpatha && lvcreate -an -Zn -L 16M -n web1 vg45' >/dev/null
wait "$p_mpd" || lab_fail "B: multipathd-rs made no map of lun0 (see B/mpd-start.err, B/mpd.log)"
on_ok "B: vgchange --lock-start vg45 (host_id 2), hostsync publish" B --timeout 240 \
  "san_lock_start vg45 && hostsync --registry $REG --host B publish" >/dev/null
uuid=$(on A 'lvs --noheadings -o lv_uuid vg45/web1 | tr -d " "')
[ -n "$uuid" ] || lab_fail "A: no UUID for vg45/web1"
lab_note "setup took $((SECONDS - t_start)) s; web1's LV UUID $uuid"
cat >"$LAB_OUT/web1.cfg" <<'EOF'
name = "web1"
disk = [ 'vdev=xvda, access=rw, script=block-hostsync, target=/dev/vg45/web1' ]
EOF

# ------------------------------------------------------------------ web1 starts on A
on A "$g l45_domain 5 web1 && l45_hotplug add 5" >/dev/null 2>"$LAB_OUT/A/start.err" \
  || lab_fail "A: block-hostsync add (a normal start of web1, domid 5) failed: $(cat "$LAB_OUT/A/start.err")"
lab_assert_match "A: a normal start activates exclusively" 'vg45/web1 attached to web1 on A \(-aey\)' "$(cat "$LAB_OUT/A/start.err")"
lab_assert_eq "A: hotplug-status connected, the LV's device reported" "connected /dev/mapper/vg45-web1" \
  "$(on A "$g echo \$(l45_xs 5 hotplug-status) \$(l45_xs 5 physical-device-path)")"
lab_assert_eq "A: web1 active exclusively (lvs lv_active_exclusively)" 1 \
  "$(on A 'lvs --noheadings --binary -o lv_active_exclusively vg45/web1 | tr -d " "')"
on_ok "A: the domU's writer started on the attached device" A "$g l45_domu_start 5 0" >/dev/null
on_both "$g san_service_start sampler bash -c '. \"\$LAB_LIB\"; . \"\$LAB_SAN_LIB\"; $g l45_sampler $uuid'" >/dev/null \
  || lab_fail "the lock samplers did not start"
read -r offA errA <<<"$(clock A)"
read -r offB errB <<<"$(clock B)"
on A --timeout 60 "$g lab_poll 50 lab_ge 10 l45_lines writes.log && lab_poll 50 lab_ge 3 l45_lines samples.txt" \
  || lab_fail "A: fewer than 10 blocks written or 3 lock samples taken within 50 s"
on B --timeout 60 "$g lab_poll 50 lab_ge 3 l45_lines samples.txt" || lab_fail "B: its lock sampler records nothing"

# ------------------------------------------------------------------ the handoff
t0=$SECONDS
rc=0
on A --timeout 300 "hostsync --registry $REG --host A migrate run web1 --to B --domu-config \"\$LAB_SHARED/web1.cfg\" \
  --migrate-command \"\$LAB_SHARED/bin/xl-migrate {domu} {to}\" --remote \"\$LAB_WS/tests/lab/guest/lab-on {to}\" --timeout 240" \
  >"$LAB_OUT/A/migrate-run.txt" 2>&1 || rc=$?
handoff_s=$((SECONDS - t0))
lab_note "migrate run exited $rc after $handoff_s s"
cat "$LAB_OUT/A/migrate-run.txt" >>"$LAB_EVIDENCE"
lab_assert_eq "A: hostsync migrate run web1 --to B exits 0" 0 "$rc"
lab_assert_match "migrate run: source shared, xl migrate run, B exclusive, finished" \
  'vg45/web1 is shared on A.*running .*xl-migrate web1 B.*web1 runs on B.*vg45/web1 is exclusive on B.*migration of web1 to B finished' \
  "$(tr '\n' ' ' <"$LAB_OUT/A/migrate-run.txt")"
lab_assert_eq "A: the block script's remove after B's success exited 0" 0 "$(cat "$LAB_OUT/A/remove.rc" 2>/dev/null)"
lab_assert_match "B: the destination's add (run through lab-on) activated web1 shared" \
  'vg45/web1 attached to web1 on B \(-asy\).*\[B exit 0\]' \
  "$(sed -n '/-> B\$ .*l45_hotplug add 7/,/^\[B exit/p' "$LAB_OUT/A/evidence.log" | tr '\n' ' ')"
lab_assert_eq "B: the destination's add reported the device" "connected /dev/mapper/vg45-web1" \
  "$(on B "$g echo \$(l45_xs 7 hotplug-status) \$(l45_xs 7 physical-device-path)")"
on B --timeout 60 "$g lab_poll 50 lab_ge 10 l45_lines writes.log" || lab_fail "B: the domU wrote fewer than 10 blocks within 50 s"
on_both 'san_service_stop sampler' >/dev/null
read -r offA2 errA2 <<<"$(clock A)"
read -r offB2 errB2 <<<"$(clock B)"

# ------------------------------------------------------------------ B ends exclusive
lab_assert_eq "B: web1 active exclusively (lvs lv_active_exclusively)" 1 \
  "$(on B 'lvs --noheadings --binary -o lv_active_exclusively vg45/web1 | tr -d " "')"
lab_assert_eq "A: web1 not active (lvs lv_active_locally)" 0 \
  "$(on A 'lvs --noheadings --binary -o lv_active_locally vg45/web1 | tr -d " "')"
n=$(on B "$g l45_domu_suspend >/dev/null && cat domu.state") || lab_fail "B: the domU did not suspend"
on_ok "B: web1's first $((n + 64)) blocks read back (O_DIRECT)" B \
  "dd if=/dev/mapper/vg45-web1 of=disk.bin bs=4096 count=$((n + 64)) iflag=direct status=none" >/dev/null

# ------------------------------------------------------------------ a later start on A
rc=0
on A "$g l45_domain 9 web1 && l45_hotplug add 9" >/dev/null 2>"$LAB_OUT/A/later-start.err" || rc=$?
lab_assert_eq "A: a later start of web1 (domid 9) is refused with exit 1" 1 "$rc"
lab_assert_match "A: hotplug-error names B as the holder" 'vg45/web1 is active on B \(exclusive\)' \
  "$(on A "$g l45_xs 9 hotplug-error")"
lab_assert_eq "A: hotplug-status error" error "$(on A "$g l45_xs 9 hotplug-status")"
lab_assert_eq "A: nothing activated by the refused start" 0 \
  "$(on A 'lvs --noheadings --binary -o lv_active_locally vg45/web1 | tr -d " "')"
out=$(on A 'lvchange -asy vg45/web1' 2>&1) && lab_fail "A: plain lvchange -asy succeeded while B holds web1: $out"
lab_assert_match "A: LVM refuses even a shared activation (lvmlockd: B's exclusive lease)" 'locked by other host' "$out"
on_both 'cp /tmp/lab45/xs-calls xenstore-calls.txt; sanlock client status >sanlock-status.txt 2>&1' >/dev/null

# ------------------------------------------------------------------ the oracles
oA=$(awk -v a="$offA" -v b="$offA2" 'BEGIN { printf "%.3f", (a + b) / 2 }')
oB=$(awk -v a="$offB" -v b="$offB2" 'BEGIN { printf "%.3f", (a + b) / 2 }')
eA=$(awk -v e="$errA" -v f="$errA2" -v a="$offA" -v b="$offA2" 'BEGIN { d = (a > b ? a - b : b - a) / 2; printf "%.3f", (e > f ? e : f) + d }')
eB=$(awk -v e="$errB" -v f="$errB2" -v a="$offB" -v b="$offB2" 'BEGIN { d = (a > b ? a - b : b - a) / 2; printf "%.3f", (e > f ? e : f) + d }')
rc=0
python3 "$LAB_OUT/oracle.py" samples "$LAB_OUT" "$oA" "$eA" "$oB" "$eB" >"$LAB_OUT/timeline.txt" 2>&1 || rc=$?
python3 "$LAB_OUT/oracle.py" data "$LAB_OUT" >"$LAB_OUT/oracle.txt" 2>&1 || rc=$?
cat "$LAB_OUT/timeline.txt" "$LAB_OUT/oracle.txt" | tee -a "$LAB_EVIDENCE" | grep -E '^(ok|FAIL|note):'
lab_assert_eq "the lock sampler and the data oracles pass, with their positive controls" 0 "$rc"
lab_note "handoff (migrate run) $handoff_s s; scenario body $((SECONDS - t_start)) s"
