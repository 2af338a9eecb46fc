# tests/lab/run-hosts.sh: the two-host part of tests/lab/run (sourced by it, alongside or after
# the one-host guest): builds the shared SAN (one raw image file per LUN), boots host A and host B in parallel
# (qemu TCG, one vCPU each), waits for their agents, runs every selected two-host scenario here
# (with tests/lab/hosts.sh to drive the guests), tears both hosts down after each one, and powers
# them off. Uses run's variables (OUT, WORK, LAB_DIR, LAB_BIN, two_host, ...) and functions (say,
# elapsed, qemu_common).
#
# The SAN: LUNs lun0..lun3 (LAB_SAN_LUN_MB each) and lock (LAB_SAN_LOCK_MB), sparse raw files
# in the run's work directory. Every guest sees every LUN through two virtio-scsi controllers,
# c0 and c1 (two scsi-hd devices on the same file, share-rw=on, file.locking=off, cache=none:
# O_DIRECT on the file, so each guest reads what the other wrote), with the same wwn (VPD 0x83
# NAA: kernel wwid naa.<wwn>, udev ID_SERIAL 3<wwn>) and serial (VPD 0x80: the LUN's lab name).
# Host B attaches the LUNs in the reverse LUN order and its controllers at swapped PCI slots, so
# its sdX names and SCSI host numbers differ from A's.
# The network: one virtio-net NIC each, joined by a unix datagram socket pair (qemu -netdev
# dgram) in the work directory: A is 10.99.0.1, B 10.99.0.2, nothing on this machine listens.

LAB_SAN_LUN_MB="${LAB_SAN_LUN_MB:-1024}"
LAB_SAN_LOCK_MB="${LAB_SAN_LOCK_MB:-64}"
LAB_HOSTS_BOOT_TIMEOUT="${LAB_HOSTS_BOOT_TIMEOUT:-420}"
SAN_LUNS=(lun0 lun1 lun2 lun3 lock)

# san_wwn_hex INDEX: NAA-5 WWN (QEMU's OUI 52:54:00, then a lab-specific number), 16 hex digits.
san_wwn_hex() { printf '55254000ab5ec0%02x' "$1"; }
san_size_mb() { if [ "${SAN_LUNS[$1]}" = lock ]; then echo "$LAB_SAN_LOCK_MB"; else echo "$LAB_SAN_LUN_MB"; fi; }

# host_env H PEER IP PEER_IP MAC CTRLS: the guest's configuration (read by guest/stage2).
host_env() {
  local luns="" i
  for i in "${!SAN_LUNS[@]}"; do luns+="${luns:+ }${SAN_LUNS[$i]}=$(san_wwn_hex "$i")"; done
  cat <<EOF
LAB_WS='$WS'
LAB_BIN='$LAB_BIN'
LAB_LIB='$LAB_DIR/lib.sh'
LAB_SAN_LIB='$LAB_DIR/lib-san.sh'
LAB_KV='$KV'
LAB_MODULES='$(echo $GUEST_MODULES)'
LAB_HOST_MODULES='$HOST_MODULES'
LAB_OUT_DIR='$OUT'
LAB_HOST='$1'
LAB_PEER='$2'
LAB_IP='$3'
LAB_PEER_IP='$4'
LAB_MAC='$5'
LAB_CTRLS='$6'
LAB_SAN_LUNS='$luns'
LAB_SAN_PATHS='$((2 * ${#SAN_LUNS[@]}))'
EOF
}

# boot_host H PEER MAC C0_SLOT C1_SLOT LUN_ORDER(reverse|forward) TIMEOUT: start its qemu in the
# background; its pid goes to .hosts/H/qemu.pid.
boot_host() {
  local h="$1" peer="$2" mac="$3" s0="$4" s1="$5" order="$6" tmo="$7" i c lun name qargs
  mapfile -t qargs < <(qemu_common "lab.host=$h")
  qargs+=(-smp 1 -m "$LAB_MEM" -serial "file:$OUT/console-$h.log"
    -device "virtio-scsi-pci,id=c0,bus=pci.0,addr=$s0"
    -device "virtio-scsi-pci,id=c1,bus=pci.0,addr=$s1"
    -netdev "dgram,id=net0,local.type=unix,local.path=$WORK/net-$h.sock,remote.type=unix,remote.path=$WORK/net-$peer.sock"
    -device "virtio-net-pci,netdev=net0,mac=$mac,bus=pci.0,addr=0x12,romfile=")
  for i in "${!SAN_LUNS[@]}"; do
    name="${SAN_LUNS[$i]}"
    lun="$i"
    [ "$order" = reverse ] && lun=$((${#SAN_LUNS[@]} - 1 - i))
    for c in c0 c1; do
      qargs+=(-drive "if=none,id=$c-$name,file=$WORK/san/$name.img,format=raw,cache=none,file.locking=off"
        -device "scsi-hd,bus=$c.0,channel=0,scsi-id=0,lun=$lun,drive=$c-$name,wwn=0x$(san_wwn_hex "$i"),serial=$name,share-rw=on,rerror=report,werror=report")
    done
  done
  printf '%q ' qemu-system-x86_64 "${qargs[@]}" >"$OUT/.hosts/$h/qemu.cmdline"
  : >"$OUT/console-$h.log"
  timeout -k 10 "$tmo" qemu-system-x86_64 "${qargs[@]}" </dev/null >"$WORK/qemu-$h.stdout" 2>&1 &
  echo $! >"$OUT/.hosts/$h/qemu.pid"
  # Follow the guest's progress lines.
  tail -n +1 -F --pid="$!" "$OUT/console-$h.log" 2>/dev/null \
    | grep --line-buffered -E '^lab(-guest)?: ' | sed -u "s/^lab-guest: /lab-guest $h: /" >&2 &
  HOST_BG_PIDS+=("$(host_pid "$h")" "$!")
}
HOST_BG_PIDS=()

host_pid() { cat "$OUT/.hosts/$1/qemu.pid" 2>/dev/null; }
host_running() { local p; p="$(host_pid "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# wait_hosts_ready: both agents ready (0), or a guest died / failed / timed out (1).
wait_hosts_ready() {
  local t0=$SECONDS h
  while :; do
    local ready=0
    for h in A B; do
      [ -e "$OUT/.hosts/$h/ready" ] && ready=$((ready + 1))
      if [ -s "$OUT/.hosts/$h/guest-fatal" ]; then
        say "host $h failed to set up: $(cat "$OUT/.hosts/$h/guest-fatal")"
        return 1
      fi
      if ! host_running "$h"; then
        say "host $h's qemu exited during boot (tests/lab/out/console-$h.log)"
        return 1
      fi
    done
    ((ready == 2)) && return 0
    if ((SECONDS - t0 > LAB_HOSTS_BOOT_TIMEOUT)); then
      say "the two hosts were not ready within ${LAB_HOSTS_BOOT_TIMEOUT}s (LAB_HOSTS_BOOT_TIMEOUT)"
      return 1
    fi
    sleep 0.5
  done
}

# two_host_teardown S: after scenario S: san_teardown on both hosts, zero the shared images,
# both hosts forget cached blocks. Output in tests/lab/out/S/teardown.log.
two_host_teardown() {
  local s="$1" i rc=0
  (
    export LAB_OUT="$OUT/$s/teardown" LAB_OUT_DIR="$OUT" LAB_LIB="$LAB_DIR/lib.sh" LAB_SCENARIO=""
    mkdir -p "$LAB_OUT"
    # shellcheck source=tests/lab/hosts.sh
    . "$LAB_DIR/hosts.sh"
    on_both --timeout 300 san_teardown || exit 1
    for i in "${!SAN_LUNS[@]}"; do
      fallocate --punch-hole --keep-size -o 0 -l "$(($(san_size_mb "$i") * 1048576))" "$WORK/san/${SAN_LUNS[$i]}.img" || exit 1
    done
    echo "shared images zeroed"
    on_both --timeout 120 san_flush
  ) >"$OUT/$s/teardown.log" 2>&1 || rc=1
  ((rc == 0)) || say "teardown after $s failed on a host (tests/lab/out/$s/teardown.log)"
  return "$rc"
}

run_two_hosts() {
  local total=$LAB_HOSTS_BOOT_TIMEOUT s f t tmo rc t0 secs h i ok=0
  for s in "${two_host[@]}"; do
    t="$(sed -n 's/^# lab-timeout:[[:space:]]*\([0-9]*\).*/\1/p' "$LAB_DIR/scenarios/$s.sh" | head -n1)"
    total=$((total + ${t:-$LAB_SCENARIO_TIMEOUT} + 420))
  done
  mkdir -p "$WORK/san" "$OUT/.hosts/A/jobs" "$OUT/.hosts/B/jobs"
  for i in "${!SAN_LUNS[@]}"; do
    truncate -s "$(san_size_mb "$i")M" "$WORK/san/${SAN_LUNS[$i]}.img"
  done
  host_env A B 10.99.0.1 10.99.0.2 52:54:00:99:00:01 "c0=0000:00:10.0 c1=0000:00:11.0" >"$OUT/.hosts/A/host.env"
  host_env B A 10.99.0.2 10.99.0.1 52:54:00:99:00:02 "c0=0000:00:11.0 c1=0000:00:10.0" >"$OUT/.hosts/B/host.env"
  say "booting hosts A and B ($KV, one vCPU each, ${#SAN_LUNS[@]} shared LUNs x 2 paths); scenarios: ${two_host[*]}"
  boot_host A B 52:54:00:99:00:01 0x10 0x11 forward "$total"
  boot_host B A 52:54:00:99:00:02 0x11 0x10 reverse "$total"
  if wait_hosts_ready; then
    say "hosts A and B ready after $(elapsed "$t_hosts")s"
    ok=1
    for s in "${two_host[@]}"; do
      f="$LAB_DIR/scenarios/$s.sh"
      mkdir -p "$OUT/$s/A" "$OUT/$s/B"
      tmo="$(sed -n 's/^# lab-timeout:[[:space:]]*\([0-9]*\).*/\1/p' "$f" | head -n1)"
      tmo="${tmo:-$LAB_SCENARIO_TIMEOUT}"
      if ! host_running A || ! host_running B; then
        say "a host is down; $s not run"
        ok=0
        continue
      fi
      say "running $s on hosts A and B (timeout ${tmo}s)"
      t0=$(date +%s.%N)
      rc=0
      (
        cd "$OUT/$s" || exit 1
        LAB_OUT="$OUT/$s" LAB_SCENARIO="$s" LAB_OUT_DIR="$OUT" LAB_LIB="$LAB_DIR/lib.sh" \
          LAB_HOSTS_LIB="$LAB_DIR/hosts.sh" LAB_BIN="$LAB_BIN" LAB_WS="$WS" \
          exec timeout -k 10 "$tmo" bash "$f"
      ) >"$OUT/$s/log" 2>&1 </dev/null || rc=$?
      secs="$(elapsed "$t0")"
      if [ "$rc" = 0 ]; then r=pass; elif [ "$rc" = 124 ]; then r="FAIL (timeout ${tmo}s)"; else r="FAIL (exit $rc)"; fi
      say "$s: $r in ${secs}s"
      two_host_teardown "$s" || ok=0
      echo "$s $rc $secs" >>"${HOSTS_RESULTS:-$OUT/results.tsv}"
    done
  fi
  # Power off: the agents stop, stage2 tears down and powers the guest off.
  for h in A B; do touch "$OUT/.hosts/$h/poweroff"; done
  for i in $(seq 600); do
    host_running A || host_running B || break
    sleep 0.2
  done
  for h in A B; do
    if host_running "$h"; then
      say "host $h did not power off within 120 s; killing its qemu"
      kill "$(host_pid "$h")" 2>/dev/null
      ok=0
    fi
    [ -e "$OUT/.hosts/$h/guest-done" ] || ok=0
  done
  # Only our own children (the qemu processes of hosts A and B), not every child of the shell.
  for p in "${HOST_BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  ((ok))
}
