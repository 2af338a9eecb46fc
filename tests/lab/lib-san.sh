# tests/lab/lib-san.sh: guest-side helpers of the two-host lab (bash, sourced after lib.sh in
# every job the driver runs on a host, and at the host's boot). The shared SAN, the guest
# network, per-host faults and the services later scenarios start (etcd, sanlock + wdmd,
# lvmlockd, multipathd-rs).
#
# Environment (from tests/lab/out/.hosts/<H>/host.env, written by tests/lab/run):
#   LAB_HOST A|B, LAB_PEER, LAB_IP / LAB_PEER_IP (10.99.0.1 / .2), LAB_MAC (this host's NIC),
#   LAB_CTRLS "c0=<pci address> c1=<pci address>" (the two virtio-scsi controllers = the two
#   "HBAs"), LAB_SAN_LUNS "lun0=<wwn hex> ... lock=<wwn hex>" (every LUN's NAA WWN, the same on
#   both hosts), LAB_SAN_PATHS (SCSI disks this host sees when nothing is faulted).
# Every SAN LUN is a raw file on the machine running the lab, attached to both guests through
# both controllers; its kernel wwid (/sys/block/sdX/device/wwid) is "naa.<wwn hex>" and udev's
# ID_SERIAL "3<wwn hex>" (VPD 0x83 NAA designator). Helpers name LUNs by their lab name (lun0,
# lun1, ..., lock) and controllers by c0 / c1: the same names on both hosts, whatever sdX and
# hostN the kernel chose.

LAB_SAN_RUN=/run/lab
[ -d "$LAB_SAN_RUN" ] || mkdir -p "$LAB_SAN_RUN"

# lab_job_init: for a job the two-host agent runs in a subshell of its own (guest/agent sourced
# lib.sh and this file once), what sourcing them does at the top level, again for the job's own
# LAB_OUT (exported by the job's header): evidence file, no daemon or I/O loop of its own yet,
# LVM_SYSTEM_DIR when a scenario configured LVM. Keep it in step with the top-level assignments
# of lib.sh and this file.
lab_job_init() {
  [ -d "$LAB_OUT" ] || mkdir -p "$LAB_OUT"
  LAB_EVIDENCE="$LAB_OUT/evidence.log"
  LAB_MPD_PID="" LAB_MPD_RC="" LAB_BG_PIDS="" LAB_IO_PID="" LAB_IO_DEV=""
  [ -d "$LAB_SAN_RUN" ] || mkdir -p "$LAB_SAN_RUN"
  if [ -e "$LAB_SAN_LVM_DIR/lvm.conf" ]; then export LVM_SYSTEM_DIR="$LAB_SAN_LVM_DIR"; else unset LVM_SYSTEM_DIR; fi
}

# ------------------------------------------------------------------ the SAN's disks
# Under emulation every process costs tens of milliseconds (more on a loaded machine): these
# helpers read sysfs with bash builtins (read, globs) and fork nothing.

# san_attr FILE: the first line of a sysfs attribute (empty if unreadable), without a fork.
san_attr() {
  local v=""
  { read -r v <"$1"; } 2>/dev/null
  printf '%s\n' "$v"
}

# san_disks: every SAN path (sdX) of this host, sorted by H:C:T:L (glob order: the lab's host
# numbers and LUNs are single digits).
san_disks() {
  local d m b
  for d in /sys/bus/scsi/drivers/sd/*:*:*:*; do
    { read -r m <"$d/model"; } 2>/dev/null || continue
    [ "$m" = "QEMU HARDDISK" ] || continue
    for b in "$d"/block/*; do [ -e "$b" ] && printf '%s\n' "${b##*/}"; break; done
  done
}
san_disk_count() {
  local n=0 d
  for d in $(san_disks); do n=$((n + 1)); done
  echo "$n"
}

# san_wait_disks N [TIMEOUT]: until this host sees exactly N SAN paths (udev settled).
san_wait_disks() {
  lab_wait "$1 SAN paths on host $LAB_HOST" "${2:-120}" lab_is "$1" san_disk_count
  lab_settle
}

# san_hctl sdX: H:C:T:L; san_devno sdX: major:minor; san_state sdX: SCSI device state.
san_hctl() {
  local x
  for x in "/sys/block/$1/device/scsi_device/"*; do [ -e "$x" ] && echo "${x##*/}"; break; done
}
san_devno() { san_attr "/sys/block/$1/dev"; }
san_state() { san_attr "/sys/block/$1/device/state"; }

# san_wwn LUN: the LUN's WWN (hex, no prefix); san_lun_of sdX: the lab name of a path's LUN.
san_wwn() {
  local kv
  for kv in $LAB_SAN_LUNS; do [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return 0; }; done
  lab_fail "no SAN LUN called '$1' (LUNs: $LAB_SAN_LUNS)"
}
san_lun_of() {
  local w kv
  w="$(san_attr "/sys/block/$1/device/wwid")"
  for kv in $LAB_SAN_LUNS; do [ "naa.${kv#*=}" = "$w" ] && { echo "${kv%%=*}"; return 0; }; done
  echo "?"
}
# san_udev_wwid LUN: the WWID udev and multipath-tools use for the LUN ("3" + NAA).
san_udev_wwid() { echo "3$(san_wwn "$1")"; }

# san_lun_paths LUN: this host's paths (sdX) to LUN, by the kernel's wwid attribute.
san_lun_paths() {
  local want d w
  want="naa.$(san_wwn "$1")"
  for d in $(san_disks); do
    w="$(san_attr "/sys/block/$d/device/wwid")"
    [ "$w" = "$want" ] && echo "$d"
  done
}

# san_ctrl_host c0|c1: the SCSI host number of one of this host's two controllers (by the PCI
# slot run-hosts.sh gave it).
san_ctrl_host() {
  local kv pci="" h
  for kv in $LAB_CTRLS; do [ "${kv%%=*}" = "$1" ] && pci="${kv#*=}"; done
  [ -n "$pci" ] || lab_fail "no controller called '$1' (controllers: $LAB_CTRLS)"
  for h in "/sys/bus/pci/devices/$pci"/virtio*/host*; do
    [ -e "$h" ] && { echo "${h##*/host}"; return 0; }
  done
  lab_fail "controller $1 ($pci) has no SCSI host on $LAB_HOST"
}
# san_ctrl_of sdX: c0 or c1.
san_ctrl_of() {
  local h c
  h="$(san_hctl "$1")"
  h="${h%%:*}"
  for c in c0 c1; do [ "$(san_ctrl_host "$c")" = "$h" ] && { echo "$c"; return 0; }; done
  echo "?"
}
# san_ctrl_disks c0|c1: the paths (sdX) behind one controller.
san_ctrl_disks() {
  local h d x
  h="$(san_ctrl_host "$1")"
  for d in $(san_disks); do
    x="$(san_hctl "$d")"
    [ "${x%%:*}" = "$h" ] && echo "$d"
  done
}

# san_map: one line per path: "sdX H:C:T:L ctrl lun major:minor state", sorted by H:C:T:L.
san_map() {
  local d h0 h1 hctl c
  h0="$(san_ctrl_host c0)" h1="$(san_ctrl_host c1)"
  for d in $(san_disks); do
    hctl="$(san_hctl "$d")"
    case "${hctl%%:*}" in "$h0") c=c0 ;; "$h1") c=c1 ;; *) c="?" ;; esac
    printf '%s %s %s %s %s %s\n' "$d" "$hctl" "$c" "$(san_lun_of "$d")" "$(san_devno "$d")" "$(san_state "$d")"
  done
}

# ------------------------------------------------------------------ faults (this host only)
# The other host keeps its own paths: faults act on this guest's SCSI devices, never on the
# shared image files.

# san_path_offline sdX / san_path_running sdX: lib.sh's lab_path_offline / lab_path_running.
san_path_offline() { lab_path_offline "$1"; }
san_path_running() { lab_path_running "$1"; }

# san_ctrl_remove c0|c1: delete every path behind one controller (an HBA's paths gone).
san_ctrl_remove() {
  local d
  for d in $(san_ctrl_disks "$1"); do lab_path_delete "$d" >/dev/null; done
  lab_note "$LAB_HOST: controller $1 paths deleted; left: $(san_disks | tr '\n' ' ')"
}

# san_lun_gone LUN: delete every path of this host to LUN.
san_lun_gone() {
  local d
  for d in $(san_lun_paths "$1"); do lab_path_delete "$d" >/dev/null; done
  lab_note "$LAB_HOST: every path to $1 deleted; left: $(san_disks | tr '\n' ' ')"
}

# san_restore [TIMEOUT]: every path back: running again, deleted ones rescanned (new sdX
# names), until this host sees all LAB_SAN_PATHS paths.
san_restore() {
  local d c n=0
  for d in $(san_disks); do
    n=$((n + 1))
    [ "$(san_state "$d")" = running ] || lab_path_running "$d" >/dev/null
  done
  # Rescan only when a path is missing (a scan finds nothing new when every path is there).
  if ((n < LAB_SAN_PATHS)); then
    for c in c0 c1; do lab_scan_host "$(san_ctrl_host "$c")" >/dev/null; done
  fi
  san_wait_disks "$LAB_SAN_PATHS" "${1:-120}"
}

# ------------------------------------------------------------------ the guest network

san_net_iface() {
  local i
  for i in /sys/class/net/*; do
    [ "$(san_attr "$i/address")" = "$LAB_MAC" ] && { echo "${i##*/}"; return 0; }
  done
  return 1
}

# san_peer_reachable: one ping to the other host over the guest network.
san_peer_reachable() { busybox ping -c 1 -W 2 "$LAB_PEER_IP" >/dev/null 2>&1; }

# ------------------------------------------------------------------ background services
# One pid file per service in /run/lab/<name>.pid; logs in $LAB_OUT/<name>.log. Stopped by pid.

# san_service_start NAME CMD...: start CMD in the background (its own session, output to
# $LAB_OUT/NAME.log), remember its pid.
san_service_start() {
  local name="$1" pid
  shift
  if san_service_running "$name"; then lab_fail "$name is already running on $LAB_HOST (pid $(cat "$LAB_SAN_RUN/$name.pid"))"; fi
  printf '\n==== [%s] start: %s\n' "$(lab_uptime)" "$*" >>"$LAB_OUT/$name.log"
  setsid "$@" >>"$LAB_OUT/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$LAB_SAN_RUN/$name.pid"
  echo "$LAB_OUT/$name.log" >"$LAB_SAN_RUN/$name.logpath"
  lab_note "$LAB_HOST: $name started, pid $pid: $*"
}
san_service_pid() {
  local pid
  { read -r pid <"$LAB_SAN_RUN/$1.pid"; } 2>/dev/null && printf '%s\n' "$pid"
}
san_service_running() {
  local pid
  pid="$(san_service_pid "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
# san_service_stop NAME [SIGNAL]: signal (TERM) and wait 20 s, then KILL.
san_service_stop() {
  local name="$1" sig="${2:-TERM}" pid
  pid="$(san_service_pid "$name")"
  [ -n "$pid" ] || return 0
  lab_stop_pid "$pid" "$sig" "$name"
  rm -f "$LAB_SAN_RUN/$name.pid"
  lab_note "$LAB_HOST: $name (pid $pid) stopped"
}
# san_service_alive NAME: fail (with the log's tail) unless it still runs.
san_service_alive() {
  san_service_running "$1" && return 0
  tail -n 20 "$(cat "$LAB_SAN_RUN/$1.logpath" 2>/dev/null)" >&2 2>/dev/null
  lab_fail "$1 is not running on $LAB_HOST"
}

# multipathd-rs: the daemon with lib.sh's paths (LAB_MPD_DIR, its config.toml is the caller's),
# as a service called "mpd" (so a later job can stop it); `lab_mpd ...` talks to it.
san_mpd_start() {
  mkdir -p "$LAB_MPD_DIR" # no config.toml there: the daemon's defaults
  NO_COLOR=1 san_service_start mpd "$LAB_BIN/multipathd-rs" --dm-backend kernel --socket "$LAB_MPD_SOCK" \
    --config "$LAB_MPD_DIR/config.toml" --aliases-table "$LAB_MPD_DIR/aliases.toml" \
    --bindings-file "$LAB_MPD_DIR/bindings" daemon
  local i
  for ((i = 0; i < 300; i++)); do
    san_service_alive mpd
    lab_mpd show status >/dev/null 2>&1 && return 0
    lab_sleep 0.2
  done
  lab_fail "multipathd-rs did not answer on $LAB_MPD_SOCK within 60 s on $LAB_HOST"
}

# san_dm_paths_in STATE: how many paths of this host's multipath maps are in dm state STATE
# (A or F), from the kernel (dmsetup status).
# One dmsetup, counted here (polled by lab_poll).
san_dm_paths_in() {
  local out i n=0
  local -a w
  out="$(dmsetup status --target multipath 2>/dev/null)"
  while read -r -a w; do
    for ((i = 0; i < ${#w[@]} - 1; i++)); do
      [[ ${w[i]} =~ ^[0-9]+:[0-9]+$ ]] && [ "${w[i + 1]}" = "$1" ] && n=$((n + 1))
    done
  done <<<"$out"
  printf '%s\n' "$n"
}
# san_offline_paths: this host's SAN paths whose SCSI device state is not "running".
san_offline_paths() {
  local d
  for d in $(san_disks); do [ "$(san_state "$d")" = running ] || echo "$d"; done
}

# etcd: a one-member cluster named after this host, clients on the guest network and loopback
# (http://<LAB_IP>:2379); data on the guest's tmpfs. san_etcd_start waits until it is healthy.
LAB_ETCD_DIR=/tmp/lab-etcd
san_etcd_url() { echo "http://${1:-$LAB_IP}:2379"; }
san_etcdctl() { ETCDCTL_API=3 etcdctl --dial-timeout=5s --command-timeout=10s "$@"; }
san_etcd_start() {
  rm -rf "$LAB_ETCD_DIR"
  mkdir -p "$LAB_ETCD_DIR"
  san_service_start etcd etcd --name "$LAB_HOST" --data-dir "$LAB_ETCD_DIR" \
    --listen-client-urls "$(san_etcd_url),http://127.0.0.1:2379" --advertise-client-urls "$(san_etcd_url)" \
    --listen-peer-urls "http://$LAB_IP:2380" --initial-advertise-peer-urls "http://$LAB_IP:2380" \
    --initial-cluster "$LAB_HOST=http://$LAB_IP:2380" --initial-cluster-state new
  local i
  for ((i = 0; i < 120; i++)); do
    san_service_alive etcd
    san_etcdctl --endpoints "$(san_etcd_url)" endpoint health >/dev/null 2>&1 && {
      lab_note "$LAB_HOST: etcd healthy at $(san_etcd_url)"
      return 0
    }
    lab_sleep 0.5
  done
  lab_fail "etcd on $LAB_HOST is not healthy after 60 s"
}

# sanlock with its watchdog: wdmd on /dev/watchdog (softdog), then `sanlock daemon` (as root, so
# it can open the SAN's block devices). Both answer before it returns.
# Note: once wdmd has armed softdog, killing wdmd without a clean stop resets the guest (that is
# the fencing later scenarios rely on); san_sanlock_stop stops sanlock first, then wdmd (TERM,
# which closes the watchdog cleanly).
san_sanlock_start() {
  [ -c /dev/watchdog ] || lab_fail "no /dev/watchdog on $LAB_HOST (softdog not loaded)"
  san_service_start wdmd wdmd -D
  lab_wait "wdmd on $LAB_HOST answers" 30 wdmd --dump
  san_service_alive wdmd
  san_service_start sanlock sanlock daemon -D -U root -G root -w 1
  lab_wait "sanlock on $LAB_HOST answers" 30 sanlock client status
  san_service_alive sanlock
}
san_sanlock_stop() {
  san_service_running sanlock && { sanlock client shutdown -f 1 >/dev/null 2>&1; san_service_stop sanlock; }
  san_service_stop wdmd
  # wdmd closes the watchdog with the magic 'V' when it stops cleanly; if it was killed the
  # watchdog stays armed and would reset this host: close it the same way (nowayout is off).
  if [ "$(san_attr /sys/class/watchdog/watchdog0/state)" = active ]; then
    lab_log "$LAB_HOST: the watchdog is still armed after wdmd stopped: disarming it"
    printf V >/dev/watchdog0
  fi
}

# lvmlockd (sanlock lock type) with host id N (1 for A, 2 for B by default); sanlock io_timeout
# LAB_SAN_IO_TIMEOUT seconds when set (lvmlockd -o; pass it with LAB_ON_ENV), sanlock's 10 s
# otherwise.
san_lvmlockd_start() {
  local id="${1:-}"
  [ -n "$id" ] || case "$LAB_HOST" in A) id=1 ;; B) id=2 ;; *) id=9 ;; esac
  mkdir -p /run/lvm
  san_service_start lvmlockd lvmlockd -f -g sanlock --host-id "$id" ${LAB_SAN_IO_TIMEOUT:+-o "$LAB_SAN_IO_TIMEOUT"}
  lab_wait "lvmlockd on $LAB_HOST answers" 30 lvmlockctl --info
  san_service_alive lvmlockd
}

# ------------------------------------------------------------------ LVM in the guests
# The guests run this machine's root: LVM must not use (or write) the machine's /etc/lvm. An LVM
# set up by a scenario lives in its own configuration directory, LAB_SAN_LVM_DIR, named by
# LVM_SYSTEM_DIR (lvm.conf there; archive/ and backup/ beside it), exported in every job sourced
# after san_lvm_conf ran (and in the processes those jobs start: sanlock's kill path, lvmlockctl).
# san_teardown removes it (/tmp/lab-san-*). Files other programs read from /etc (e.g.
# /etc/default/sanlock, a udev rule) are replaced with san_etc_put, undone by san_etc_restore.
LAB_SAN_LVM_DIR=/tmp/lab-san-lvm
[ -e "$LAB_SAN_LVM_DIR/lvm.conf" ] && export LVM_SYSTEM_DIR="$LAB_SAN_LVM_DIR"

# san_lvm_conf [LINE...]: write LAB_SAN_LVM_DIR/lvm.conf and export LVM_SYSTEM_DIR: lvmlockd in
# use, lvmlockctl_kill_command "$LAB_SAN_KILL_COMMAND" (default "$LAB_BIN/hostsync fence": lvmlockctl wants a full path), LVM sees
# only /dev/mapper/ devices (global_filter; the SCSI paths of the maps stay hidden), no devices
# file; each LINE is appended as is (more sections, e.g. 'activation { ... }').
san_lvm_conf() {
  local l
  mkdir -p "$LAB_SAN_LVM_DIR/archive" "$LAB_SAN_LVM_DIR/backup" /run/lvm /run/lock/lvm
  {
    echo "# written by san_lvm_conf on $LAB_HOST"
    echo 'global {'
    echo '  use_lvmlockd = 1'
    printf '  lvmlockctl_kill_command = "%s"\n' "${LAB_SAN_KILL_COMMAND:-$LAB_BIN/hostsync fence}"
    echo '}'
    echo 'devices {'
    echo '  global_filter = [ "a|^/dev/mapper/|", "r|.*|" ]'
    echo '  use_devicesfile = 0'
    echo '}'
    for l in "$@"; do printf '%s\n' "$l"; done
  } >"$LAB_SAN_LVM_DIR/lvm.conf"
  export LVM_SYSTEM_DIR="$LAB_SAN_LVM_DIR"
  lab_note "$LAB_HOST: LVM configuration in $LAB_SAN_LVM_DIR (LVM_SYSTEM_DIR): $(tr '\n' ' ' <"$LAB_SAN_LVM_DIR/lvm.conf")"
}

# san_etc_put PATH: replace (or create) PATH under /etc with stdin, on this guest only: its
# directory is copied to /run/lab/etc-copy/ and bind-mounted over the original (works whether
# the guest's /etc is read-only or an overlay); san_etc_restore unmounts every such copy.
san_etc_put() {
  local path="$1" dir copy
  dir="$(dirname "$path")"
  copy="$LAB_SAN_RUN/etc-copy$dir"
  if ! grep -qxF "$dir" "$LAB_SAN_RUN/etc-mounts" 2>/dev/null; then
    mkdir -p "$copy"
    [ -d "$dir" ] || lab_fail "san_etc_put: $dir does not exist on $LAB_HOST"
    cp -a "$dir/." "$copy/"
    mount --bind "$copy" "$dir" || lab_fail "san_etc_put: cannot bind-mount a copy over $dir on $LAB_HOST"
    echo "$dir" >>"$LAB_SAN_RUN/etc-mounts"
  fi
  cat >"$path" || lab_fail "san_etc_put: cannot write $path on $LAB_HOST"
  lab_note "$LAB_HOST: $path replaced (a copy of $dir bind-mounted over it)"
}
san_etc_restore() {
  local d
  [ -e "$LAB_SAN_RUN/etc-mounts" ] || return 0
  tac "$LAB_SAN_RUN/etc-mounts" | while read -r d; do umount "$d" 2>/dev/null || umount -l "$d"; done
  rm -rf "$LAB_SAN_RUN/etc-mounts" "$LAB_SAN_RUN/etc-copy"
}

# san_mpath_create NAME LUN: a dm multipath map NAME (uuid mpath-<WWID>, as multipath-tools and
# multipathd-rs name them) over this host's paths to LUN, round-robin, made with dmsetup
# (fast: no daemon); waits for /dev/mapper/NAME.
san_mpath_create() {
  local name="$1" lun="$2" d paths="" n=0 sz=""
  for d in $(san_lun_paths "$lun"); do
    paths="$paths $(san_devno "$d") 1"
    n=$((n + 1))
    [ -n "$sz" ] || sz="$(blockdev --getsz "/dev/$d")"
  done
  ((n > 0)) || lab_fail "san_mpath_create: $LAB_HOST has no path to $lun"
  dmsetup create "$name" --uuid "mpath-$(san_udev_wwid "$lun")" \
    --table "0 $sz multipath 0 0 1 1 round-robin 0 $n 1$paths" || lab_fail "san_mpath_create: dmsetup create $name failed on $LAB_HOST"
  lab_wait "/dev/mapper/$name on $LAB_HOST" 30 test -b "/dev/mapper/$name"
  lab_note "$LAB_HOST: map $name over $n path(s) of $lun: $(dmsetup table "$name")"
}

# san_lock_start VG: `vgchange --lock-start VG`, again (up to 3 tries, 2 s apart) while it fails
# with "invalid parameters for sanlock": lvmlockd (2.03.16) gives the VG's lvmlock LV 1 s to
# appear under /dev/mapper before it gives up with that error, which a loaded TCG guest's udevd
# can miss (seen in 43 and 47). Any other failure is final.
san_lock_start() {
  local i out rc
  for i in 1 2 3; do
    out="$(vgchange --lock-start "$1" 2>&1)"
    rc=$?
    printf '%s\n' "$out"
    ((rc == 0)) && return 0
    case "$out" in *"invalid parameters for sanlock"*) ;; *) return "$rc" ;; esac
    lab_note "$LAB_HOST: vgchange --lock-start $1 try $i: lvmlockd did not find the lvmlock LV in time; again"
    sleep 2
  done
  return "$rc"
}

# san_sanlock_daemon W: (re)start only the sanlock daemon (service "sanlock"), watchdog -w W
# (0: off, Debian's default; 1: through wdmd, which must run: san_service_start wdmd wdmd -D).
san_sanlock_daemon() {
  san_service_running sanlock && { sanlock client shutdown -f 1 >/dev/null 2>&1; san_service_stop sanlock; }
  san_service_start sanlock sanlock daemon -D -U root -G root -w "$1"
  lab_wait "sanlock (-w $1) on $LAB_HOST answers" 30 sanlock client status
  san_service_alive sanlock
}

# ------------------------------------------------------------------ boot and teardown

# san_boot (stage2, once): loopback and the guest network up, udevd, every SAN path present.
san_boot() {
  local ifc i
  ip link set lo up || lab_fail "cannot bring lo up"
  ifc="$(san_net_iface)" || lab_fail "no network interface with MAC $LAB_MAC (virtio_net)"
  ip addr add "$LAB_IP/24" dev "$ifc" || lab_fail "cannot set $LAB_IP on $ifc"
  ip link set "$ifc" up || lab_fail "cannot bring $ifc up"
  lab_udevd_start
  san_wait_disks "$LAB_SAN_PATHS" 180
  lab_run ip -brief addr
  lab_run san_map
  [ -c /dev/watchdog ] || lab_fail "no /dev/watchdog (softdog)"
  for i in $(seq 60); do san_peer_reachable && break; sleep 1; done
  san_peer_reachable && lab_note "$LAB_HOST: peer $LAB_PEER_IP answers ping" \
    || lab_note "$LAB_HOST: peer $LAB_PEER_IP does not answer yet (it may still be booting)"
  return 0
}

# san_teardown (the driver runs it on both hosts after every two-host scenario): stop the
# services and the daemon, end processes holding SAN devices, remove maps (lib.sh's
# lab_teardown_all), bring every path back, drop cached blocks (the driver zeroes the shared
# images next), forget guest-local state.
san_teardown() {
  local s
  for s in mpd lvmlockd; do san_service_stop "$s"; done
  san_sanlock_stop
  san_etc_restore
  for s in "$LAB_SAN_RUN"/*.pid; do
    [ -e "$s" ] || continue
    san_service_stop "$(basename "$s" .pid)"
  done
  lab_io_stop
  lab_teardown_all
  lab_udevd_running || lab_udevd_start
  san_restore 180
  rm -rf "$LAB_ETCD_DIR" "$LAB_MPD_DIR" "$LAB_IO_DIR" /tmp/lab-san-*
  san_flush
}

# san_flush: write back and forget cached blocks of every SAN path (before and after the
# driver zeroes the shared images): BLKFLSBUF (blockdev --flushbufs) syncs a disk and drops its
# page cache, which is where a SAN path's blocks are cached (the maps on top are removed by
# then). One blockdev for every path (one per path only if that fails), and no drop_caches: it
# also threw away the page cache of the host root (9p), so every program the next scenario ran
# was read again over 9p (12.5 s for san_flush alone on a loaded machine, most of it execs).
san_flush() {
  local d disks=()
  for d in $(san_disks); do disks+=("/dev/$d"); done
  if ((${#disks[@]})); then
    blockdev --flushbufs "${disks[@]}" 2>/dev/null \
      || for d in "${disks[@]}"; do blockdev --flushbufs "$d" 2>/dev/null; done
  fi
  sync
}
