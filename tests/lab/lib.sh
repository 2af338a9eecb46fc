# tests/lab/lib.sh: helpers for lab scenarios (bash, sourced inside the guest as root).
#   . "$LAB_LIB"
# Conventions: every helper prints what it does; failures of helpers that set up a topology
# call lab_fail (the scenario exits 1). Evidence goes to $LAB_OUT/evidence.log: every command run
# through lab_run / lab_capture with its output and exit status, and every assertion with what
# was expected and what was seen.

LAB_OUT="${LAB_OUT:-/tmp/lab-out}"
mkdir -p "$LAB_OUT"
LAB_EVIDENCE="$LAB_OUT/evidence.log"
LAB_SD_SYSFS=/sys/bus/pseudo/drivers/scsi_debug
LAB_TARGET_CFS=/sys/kernel/config/target

# ------------------------------------------------------------------ logging, evidence, asserts

# Under emulation every process costs 15-30 ms to fork and 65-75 ms to exec: the helpers below
# that run in loops or at every step (logging, polling, the disk and map lists) use bash
# builtins (read, globs, parameter expansion) instead of cat/cut/awk/sed/sort pipelines.

# lab_uptime: the guest's uptime in seconds (the first field of /proc/uptime), no fork.
lab_uptime() {
  local u _
  read -r u _ </proc/uptime
  printf '%s' "$u"
}

lab_log() {
  local u _
  read -r u _ </proc/uptime
  printf '[%s] %s\n' "$u" "$*"
}

# lab_sleep SECONDS: sleep without a process: a read with a timeout on a FIFO nobody writes
# to, opened once per shell (fd LAB_SLEEP_FD; falls back to sleep(1) if no FIFO can be made).
LAB_SLEEP_FD=""
lab_sleep() {
  if [ -z "$LAB_SLEEP_FD" ]; then
    local f="${TMPDIR:-/tmp}/.lab-sleep.$BASHPID.$RANDOM"
    if mkfifo -m 600 "$f" 2>/dev/null && exec {LAB_SLEEP_FD}<>"$f"; then
      rm -f "$f"
    else
      rm -f "$f"
      LAB_SLEEP_FD=none
    fi
  fi
  if [ "$LAB_SLEEP_FD" = none ]; then
    sleep "$1"
  else
    read -r -t "$1" -u "$LAB_SLEEP_FD" _ || :
  fi
  return 0
}

lab_note() { # free-form evidence line
  printf '# %s\n' "$*" >>"$LAB_EVIDENCE"
  lab_log "$*"
}

lab_fail() {
  printf 'FAIL: %s\n' "$*" | tee -a "$LAB_EVIDENCE" >&2
  exit 1
}

# lab_run CMD...: run, record command + output + status in evidence.log, echo the output to
# stdout, return the command's status.
lab_run() {
  local out rc
  out="$("$@" 2>&1)"
  rc=$?
  {
    printf '$ %s\n' "$*"
    [ -n "$out" ] && printf '%s\n' "$out"
    printf '[exit %d]\n' "$rc"
  } >>"$LAB_EVIDENCE"
  [ -n "$out" ] && printf '%s\n' "$out"
  return "$rc"
}

# lab_capture FILE CMD...: like lab_run, and keep stdout alone (no stderr) in $LAB_OUT/FILE as an
# artifact; stderr goes to evidence.log. Returns the command's status.
lab_capture() {
  local file="$1" rc
  shift
  "$@" >"$LAB_OUT/$file" 2>"$LAB_OUT/.stderr"
  rc=$?
  {
    printf '$ %s > %s\n' "$*" "$file"
    cat "$LAB_OUT/$file"
    [ -s "$LAB_OUT/.stderr" ] && { echo '(stderr)'; cat "$LAB_OUT/.stderr"; }
    printf '[exit %d]\n' "$rc"
  } >>"$LAB_EVIDENCE"
  cat "$LAB_OUT/.stderr" >&2
  rm -f "$LAB_OUT/.stderr"
  return "$rc"
}

# lab_expect_ok DESC CMD...: the command must succeed.
lab_expect_ok() {
  local desc="$1"
  shift
  if lab_run "$@"; then
    printf 'ok: %s\n' "$desc" | tee -a "$LAB_EVIDENCE"
  else
    lab_fail "$desc: '$*' failed (see evidence.log)"
  fi
}

# lab_expect_fail DESC CMD...: the command must fail (for refusals).
lab_expect_fail() {
  local desc="$1"
  shift
  if lab_run "$@"; then
    lab_fail "$desc: '$*' succeeded but must be refused"
  else
    printf 'ok: %s (refused as expected)\n' "$desc" | tee -a "$LAB_EVIDENCE"
  fi
}

# lab_assert_eq DESC EXPECTED ACTUAL
lab_assert_eq() {
  if [ "$2" = "$3" ]; then
    printf 'ok: %s: %s\n' "$1" "$3" | tee -a "$LAB_EVIDENCE"
  else
    printf 'expected: %s\nseen:     %s\n' "$2" "$3" >>"$LAB_EVIDENCE"
    lab_fail "$1: expected '$2', saw '$3'"
  fi
}

# lab_assert_match DESC REGEX ACTUAL (extended regex, grep -E)
lab_assert_match() {
  if printf '%s\n' "$3" | grep -Eq -- "$2"; then
    printf 'ok: %s: matches /%s/\n' "$1" "$2" | tee -a "$LAB_EVIDENCE"
  else
    printf 'expected to match: %s\nseen: %s\n' "$2" "$3" >>"$LAB_EVIDENCE"
    lab_fail "$1: '$3' does not match /$2/"
  fi
}

# lab_wait DESC TIMEOUT_S CMD...: poll CMD every 0.2 s until it succeeds.
lab_wait() {
  local desc="$1" tmo="$2" i=0
  shift 2
  while ! "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    if ((i > tmo * 5)); then
      lab_fail "timed out after ${tmo}s waiting for: $desc"
    fi
    lab_sleep 0.2
  done
}

# ------------------------------------------------------------------------------ udev

# lab_udevd_running: a process called systemd-udevd exists (pgrep -x, without its exec).
lab_udevd_running() {
  local f c
  for f in /proc/[0-9]*/comm; do
    { read -r c <"$f"; } 2>/dev/null && [ "$c" = systemd-udevd ] && return 0
  done
  return 1
}

lab_udevd_start() {
  lab_udevd_running && return 0
  local udevd=/lib/systemd/systemd-udevd
  [ -x "$udevd" ] || udevd=/usr/lib/systemd/systemd-udevd
  [ -x "$udevd" ] || lab_fail "systemd-udevd is not installed on the host (package udev)"
  mkdir -p /run/udev
  "$udevd" --daemon --resolve-names=never || lab_fail "systemd-udevd did not start"
  # Only storage matters here; a full `udevadm trigger` costs ~20 s under emulation.
  udevadm trigger --action=add --subsystem-match=block --subsystem-match=scsi \
    --subsystem-match=scsi_disk --subsystem-match=scsi_generic --subsystem-match=misc
  udevadm settle --timeout=60 || lab_log "udevadm settle timed out after start"
  lab_log "systemd-udevd started"
}

lab_udevd_stop() {
  lab_udevd_running || return 0
  udevadm control --exit 2>/dev/null || pkill -x systemd-udevd
  local i
  for ((i = 0; i < 50; i++)); do lab_udevd_running || break; lab_sleep 0.1; done
  lab_udevd_running && pkill -9 -x systemd-udevd
  # libudev (and so libdevmapper's udev sync in dmsetup/lvm) decides "udev is running" from
  # /run/udev/control: left behind, every dmsetup create/remove would wait forever for a udev
  # cookie nobody will complete. Remove the whole runtime dir (its db would be stale anyway).
  rm -rf /run/udev
  lab_log "systemd-udevd stopped"
}

lab_settle() {
  if lab_udevd_running; then udevadm settle --timeout="${1:-60}" || lab_log "udevadm settle timed out"; fi
}

# ------------------------------------------------------------------------- scsi_debug SAN

# scsi_debug-backed disks (sdX names), sorted by H:C:T:L.
# (No fork: the sort is an indexed array keyed by H:C:T:L as one number, which bash lists in
# ascending order.)
lab_sd_disks() {
  local d m b name hctl h c t l k
  local -a by=()
  for d in /sys/bus/scsi/drivers/sd/*:*:*:*; do
    [ -e "$d" ] || continue
    m=""
    { read -r m <"$d/model"; } 2>/dev/null
    [ "${m// /}" = scsi_debug ] || continue
    name=""
    for b in "$d"/block/*; do
      [ -e "$b" ] && name="${b##*/}"
      break
    done
    [ -n "$name" ] || continue
    hctl="${d##*/}"
    h="${hctl%%:*}" hctl="${hctl#*:}"
    c="${hctl%%:*}" hctl="${hctl#*:}"
    t="${hctl%%:*}" l="${hctl#*:}"
    k=$((((h * 1000 + c) * 1000 + t) * 1000000 + l))
    by[k]="$name"
  done
  for k in "${!by[@]}"; do printf '%s\n' "${by[k]}"; done
}

# SCSI host numbers (N of hostN) that belong to scsi_debug, ascending.
lab_sd_hosts() {
  local h n
  local -a by=()
  for h in "$LAB_SD_SYSFS"/adapter*/host*; do
    [ -e "$h" ] || continue
    n="${h##*/host}"
    by[n]="$n"
  done
  for n in "${!by[@]}"; do printf '%s\n' "$n"; done
}

# lab_count: lines on stdin (wc -l: a last line without its newline is not counted).
lab_count() {
  local -a l
  local n
  mapfile l
  n=${#l[@]}
  ((n)) && [[ ${l[n - 1]} != *$'\n' ]] && n=$((n - 1))
  printf '%s\n' "$n"
}
lab_sd_disk_count() {
  local n=0 d
  for d in $(lab_sd_disks); do n=$((n + 1)); done
  printf '%s\n' "$n"
}

# lab_wait_sd_disks N [TIMEOUT]: until exactly N scsi_debug disks exist (and udev settled).
lab_wait_sd_disks() {
  local n="$1" tmo="${2:-120}"
  # lab_is re-runs the count at every attempt (a "$(...)" argument would be expanded once).
  lab_wait "$n scsi_debug disks" "$tmo" lab_is "$n" lab_sd_disk_count
  lab_settle
}

# lab_scsi_debug HOSTS LUNS [PARAM=VALUE...]: load scsi_debug with HOSTS hosts, one target, LUNS
# LUNs, the same LUNs (same VPD identifiers) through every host; wait for the disks and udev.
lab_scsi_debug() {
  local hosts="$1" luns="$2"
  shift 2
  lab_module_loaded scsi_dh_alua || lab_fail "scsi_dh_alua must be loaded before scsi_debug"
  lab_module_loaded scsi_debug && lab_fail "scsi_debug is already loaded (a previous scenario leaked it)"
  lab_run modprobe scsi_debug add_host="$hosts" num_tgts=1 max_luns="$luns" vpd_use_hostno=0 \
    dev_size_mb=8 "$@" || lab_fail "modprobe scsi_debug failed"
  lab_wait_sd_disks $((hosts * luns))
  lab_note "scsi_debug: $hosts hosts x $luns LUNs: hosts $(lab_sd_hosts | tr '\n' ' ')disks $(lab_sd_disks | tr '\n' ' ')"
}

# lab_scan_host H [C T L]: targeted (or wildcard) scan of scsi host H.
lab_scan_host() {
  local h="$1"
  shift
  local what="${*:-- - -}"
  lab_run sh -c "echo '$what' > /sys/class/scsi_host/host$h/scan"
}

# lab_sd_add_luns NEW_MAX_LUNS [--no-scan]: raise scsi_debug's max_luns; unless --no-scan, scan
# every scsi_debug host and wait for the new disks.
lab_sd_add_luns() {
  local max="$1" hosts
  lab_run sh -c "echo $max > $LAB_SD_SYSFS/max_luns" || lab_fail "cannot set max_luns=$max"
  [ "${2:-}" = --no-scan ] && return 0
  hosts=$(lab_sd_hosts | lab_count)
  local h
  for h in $(lab_sd_hosts); do lab_scan_host "$h"; done
  lab_wait_sd_disks $((hosts * max))
}

# Path faults on one disk (sdX).
lab_path_offline() { lab_run sh -c "echo offline > /sys/block/$1/device/state"; }
lab_path_running() { lab_run sh -c "echo running > /sys/block/$1/device/state"; }
lab_path_delete() { lab_run sh -c "echo 1 > /sys/block/$1/device/delete"; lab_settle; }
lab_path_state() { lab_attr "/sys/block/$1/device/state"; }

# lab_hba_remove: remove the most recently added scsi_debug host with all its paths.
lab_hba_remove() {
  lab_run sh -c "echo -1 > $LAB_SD_SYSFS/add_host" || lab_fail "cannot remove a scsi_debug host"
  lab_settle
}

# lab_hba_add: add one scsi_debug host (same LUNs) and scan it.
lab_hba_add() {
  local before after h
  before="$(lab_sd_hosts | tr '\n' ' ')"
  lab_run sh -c "echo 1 > $LAB_SD_SYSFS/add_host" || lab_fail "cannot add a scsi_debug host"
  after="$(lab_sd_hosts | tr '\n' ' ')"
  for h in $after; do
    case " $before " in *" $h "*) ;; *) lab_scan_host "$h" ;; esac
  done
  lab_settle
}

# lab_sd_inject OPTS [EVERY_NTH]: scsi_debug error injection through its `opts` bit mask
# (kernel's scsi_debug.c): 2 = MEDIUM ERROR on reads touching sectors 4660..4669
# ($LAB_SD_MEDIUM_ERR_SECTOR), 4 = ignore (time out) every EVERY_NTH-th command, 8 = recovered
# error, 0x10 = transport error every EVERY_NTH-th. `lab_sd_inject 0 0` turns injection off.
LAB_SD_MEDIUM_ERR_SECTOR=4660
lab_sd_inject() {
  lab_run sh -c "echo ${2:-0} > $LAB_SD_SYSFS/every_nth && echo $1 > $LAB_SD_SYSFS/opts"
}

# lab_attr FILE: the first line of a sysfs attribute, like cat for a one-line file (no fork; an
# unreadable file: the error on stderr, status 1).
lab_attr() {
  local v=""
  { IFS= read -r v || :; } <"$1" || return 1
  printf '%s\n' "$v"
}

# Identity helpers.
lab_devno() { lab_attr "/sys/block/$1/dev"; }
# lab_hctl sdX: H:C:T:L, the name of the disk's scsi_device (= basename of its device link).
lab_hctl() {
  local x
  for x in "/sys/block/$1/device/scsi_device/"*; do
    [ -e "$x" ] && printf '%s\n' "${x##*/}"
    break
  done
}
# lab_paths_table: one line "sdX MAJ:MIN H:C:T:L" per scsi_debug disk into $LAB_OUT/paths.txt,
# which lab_path_of, lab_devno_of and the scenarios read; sets h0 and h1 to the first two
# scsi_debug host numbers and notes them with the table.
lab_paths_table() {
  local d hs line table=""
  hs="$(lab_sd_hosts)"
  read -r h0 h1 <<<"${hs//$'\n'/ }"
  for d in $(lab_sd_disks); do
    line="$d $(lab_devno "$d") $(lab_hctl "$d")"
    printf '%s\n' "$line"
    table+="$line;"
  done >"$LAB_OUT/paths.txt"
  lab_note "hosts $h0 $h1; paths: $table"
}
lab_path_of() { # HOST LUN -> sdX
  local d n h
  while read -r d n h _; do [ "$h" = "$1:0:0:$2" ] && printf '%s\n' "$d"; done <"$LAB_OUT/paths.txt"
  return 0
}
lab_devno_of() { # sdX -> MAJ:MIN
  local d n _
  while read -r d n _; do [ "$d" = "$1" ] && printf '%s\n' "$n"; done <"$LAB_OUT/paths.txt"
  return 0
}
# lab_map_of_devno MAJ:MIN: the multipath map whose table holds that path (the first such map;
# one dmsetup, parsed here).
lab_map_of_devno() {
  local out i
  local -a w
  out="$(dmsetup table --target multipath)"
  while read -r -a w; do
    for ((i = 1; i < ${#w[@]}; i++)); do
      [ "${w[i]}" = "$1" ] && { printf '%s\n' "${w[0]%:}"; return 0; }
    done
  done <<<"$out"
  return 0
}
# lab_udev_serial sdX: udev's ID_SERIAL of /dev/sdX, read from udev's database entry of the
# device (/run/udev/data/b<major>:<minor>, the "E:" lines `udevadm info --query=property`
# prints) without a process; when there is no entry to read, udevadm as before.
lab_udev_serial() {
  local devno="" l
  { read -r devno <"/sys/class/block/$1/dev"; } 2>/dev/null
  if [ -n "$devno" ] && [ -r "/run/udev/data/b$devno" ]; then
    while IFS= read -r l || [ -n "$l" ]; do
      [ "${l#E:ID_SERIAL=}" != "$l" ] && printf '%s\n' "${l#E:ID_SERIAL=}"
    done <"/run/udev/data/b$devno"
    return 0
  fi
  udevadm info --query=property --name="/dev/$1" | sed -n 's/^ID_SERIAL=//p'
}
lab_sectors() { lab_attr "/sys/block/$1/size"; }

# ------------------------------------------------------------------------- tcm_loop (LIO)

# lab_tcm_loop K [SIZE_MB] [SERIAL]: one file-backed LUN (fileio backstore on /tmp) exported
# through K tcm_loop SCSI hosts (K paths, NAA-6 WWID, ALUA and SPC-3 reservations).
lab_tcm_loop() {
  local k="$1" size="${2:-32}" serial="${3:-lab$(date +%s)}" i wwn
  local bs="$LAB_TARGET_CFS/core/fileio_0/lun0"
  mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
  modprobe tcm_loop || lab_fail "modprobe tcm_loop failed"
  truncate -s "${size}M" /tmp/lab-fileio-lun0.img
  mkdir -p "$bs" || lab_fail "cannot create the fileio backstore in configfs"
  echo "fd_dev_name=/tmp/lab-fileio-lun0.img,fd_dev_size=$((size * 1024 * 1024))" >"$bs/control"
  echo "$serial" >"$bs/wwn/vpd_unit_serial"
  echo 1 >"$bs/enable" || lab_fail "cannot enable the fileio backstore"
  local before
  before=$(ls /sys/class/scsi_disk | lab_count)
  for i in $(seq 1 "$k"); do
    wwn="naa.50014050000000$(printf %02x "$i")"
    mkdir -p "$LAB_TARGET_CFS/loopback/$wwn/tpgt_1/lun/lun_0" || lab_fail "cannot create tcm_loop $wwn"
    echo "naa.50014051000000$(printf %02x "$i")" >"$LAB_TARGET_CFS/loopback/$wwn/tpgt_1/nexus"
    ln -s "$bs" "$LAB_TARGET_CFS/loopback/$wwn/tpgt_1/lun/lun_0/lab_lun0" \
      || lab_fail "cannot link the LUN into $wwn"
  done
  lab_wait "$k tcm_loop disks" 60 test "$(ls /sys/class/scsi_disk | lab_count)" -ge $((before + k))
  lab_settle
  lab_note "tcm_loop: 1 LUN (${size} MiB, serial $serial) through $k paths"
}

lab_tcm_loop_teardown() {
  [ -d "$LAB_TARGET_CFS/loopback" ] || return 0
  local tpg lnk
  for tpg in "$LAB_TARGET_CFS"/loopback/naa.*/tpgt_*; do
    [ -d "$tpg" ] || continue
    for lnk in "$tpg"/lun/lun_*/*; do [ -L "$lnk" ] && rm -f "$lnk"; done
    rmdir "$tpg"/lun/lun_* 2>/dev/null
    rmdir "$tpg" 2>/dev/null
    rmdir "$(dirname "$tpg")" 2>/dev/null
  done
  rmdir "$LAB_TARGET_CFS"/core/fileio_*/* 2>/dev/null
  rmdir "$LAB_TARGET_CFS"/core/fileio_* 2>/dev/null
  rm -f /tmp/lab-fileio-*.img
}

# ------------------------------------------------------------------------- device-mapper

# lab_flakey NAME DEV UP_S DOWN_S: a dm-flakey map over /dev/DEV (up UP_S s, then failing DOWN_S s).
lab_flakey() {
  local sectors
  sectors="$(lab_sectors "$2")"
  lab_run dmsetup create "$1" --table "0 $sectors flakey /dev/$2 0 $3 $4" || lab_fail "dm-flakey $1 failed"
  lab_dm_node "$1"
}

# lab_dm_node NAME: make sure /dev/mapper/NAME exists (without udevd nobody else creates it).
lab_dm_node() {
  lab_settle
  [ -e "/dev/mapper/$1" ] || dmsetup mknodes "$1"
  [ -b "/dev/mapper/$1" ] || lab_fail "/dev/mapper/$1 does not exist"
}

# lab_dm_names [ARG...]: the names of the maps `dmsetup ls ARG...` lists (nothing when it says
# "No devices found"), one per line; one process.
lab_dm_names() {
  local out name _
  out="$(dmsetup ls "$@" 2>/dev/null)"
  while read -r name _; do [ -n "$name" ] && [ "$name" != No ] && printf '%s\n' "$name"; done <<<"$out"
  return 0
}

# lab_module_loaded NAME: NAME is in /proc/modules (grep -q '^NAME ', without the process).
lab_module_loaded() {
  local m _
  while read -r m _; do [ "$m" = "$1" ] && return 0; done </proc/modules
  return 1
}

# lab_map_remove MAP: a teardown's removal of a map nobody should hold any more. udev's probes
# of the map (blkid on a change event, e.g. after a path came back) open it briefly, so wait for
# udev first and let dmsetup retry a busy map for a few seconds. If it stays busy, log what holds
# it (open count, holders) before failing, so a real leak is told apart from a probe.
lab_map_remove() {
  lab_settle 30
  dmsetup remove --retry "$1" && return 0
  local k f who=
  k=$(dmsetup info -c --noheadings -o blkdevname "$1" 2>/dev/null)
  for f in /proc/[0-9]*/fd/*; do
    case "$(readlink "$f" 2>/dev/null)" in "/dev/$k" | "/dev/mapper/$1")
      f=${f#/proc/} && who+=" ${f%%/*}($(<"/proc/${f%%/*}/comm"))" ;;
    esac
  done
  lab_log "$1 ($k) still busy after udev settled: open count $(dmsetup info -c --noheadings -o open "$1" 2>&1);" \
    "holders: $(ls "/sys/block/$k/holders" 2>&1 | tr '\n' ' ');" "open by:${who:- no process}"
  return 1
}

# lab_dm_remove_all: remove every dm map (multipath maps through multipath -F first).
lab_dm_remove_all() {
  local n
  if [ -n "$(lab_dm_names --target multipath)" ]; then
    command -v multipath >/dev/null && multipath -F >/dev/null 2>&1
  fi
  for n in $(lab_dm_names); do
    dmsetup remove --retry "$n" >/dev/null 2>&1 || dmsetup remove --force "$n" >/dev/null 2>&1
  done
  [ -n "$(lab_dm_names)" ] && return 1
  return 0
}

# ------------------------------------------------------------------------- teardown

# lab_teardown_all: leave the guest as a fresh boot left it (run by the runner after every
# scenario; scenarios may call it too). Kills processes holding lab disks open, removes dm maps,
# tcm_loop and scsi_debug, stops multipathd, drops guest-local multipath config.
lab_teardown_all() {
  local pid maps f pids=" " comm
  maps="$(lab_dm_names)"
  lab_log "teardown: start (maps: ${maps:+${maps//$'\n'/ } })"
  pkill -x multipathd 2>/dev/null
  # Processes that still hold a block device open (e.g. `sleep` with fd 3 on /dev/mapper/X);
  # one find over /proc instead of a process per pid (every exec is slow under emulation).
  while read -r f; do
    f="${f#/proc/}"
    f="${f%%/*}"
    case "$pids" in *" $f "*) ;; *) pids+="$f " ;; esac
  done < <(find /proc/[0-9]*/fd -maxdepth 1 \( -lname '/dev/dm-*' -o -lname '/dev/sd*' \
    -o -lname '/dev/mapper/*' \) 2>/dev/null)
  for pid in $pids; do
    [ "$pid" -le 1 ] || [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
    comm=""
    { read -r comm <"/proc/$pid/comm"; } 2>/dev/null
    case "$comm" in *udev*) continue ;; esac
    lab_log "killing pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)) which holds a lab device open"
    kill -9 "$pid" 2>/dev/null
  done
  lab_settle 30
  lab_dm_remove_all || lab_log "some dm maps could not be removed: $(dmsetup ls 2>&1 | tr '\n' ' ')"
  lab_tcm_loop_teardown
  if lab_module_loaded scsi_debug; then
    local i
    for ((i = 0; i < 20; i++)); do
      rmmod scsi_debug 2>/dev/null && break
      lab_sleep 0.5
    done
    lab_module_loaded scsi_debug && lab_log "scsi_debug could not be removed"
  fi
  rm -f /etc/multipath.conf /etc/multipath/bindings /etc/multipath/wwids
  lab_settle 30
  lab_log "teardown: done"
  return 0
}

# ------------------------------------------------------------------------- multipathd-rs daemon
# Used by 06-08. One daemon per scenario, started and stopped by pid (never by name).
LAB_MPD_PID=""
LAB_MPD_RC=""
LAB_MPD_DIR="${LAB_MPD_DIR:-/tmp/lab-mpd}"
LAB_MPD_SOCK="$LAB_MPD_DIR/mpd.sock"

# lab_mpd ARGS...: run multipathd-rs with the scenario's config, alias files and socket.
lab_mpd() {
  "$LAB_BIN/multipathd-rs" --dm-backend kernel --socket "$LAB_MPD_SOCK" \
    --config "$LAB_MPD_DIR/config.toml" --aliases-table "$LAB_MPD_DIR/aliases.toml" \
    --bindings-file "$LAB_MPD_DIR/bindings" "$@"
}

# lab_mpd_start LOG: start `multipathd-rs daemon` in the background (stderr+stdout appended to
# $LAB_OUT/LOG), wait until its socket answers `show status` (60 s).
lab_mpd_start() {
  local log="${1:-daemon.log}"
  mkdir -p "$LAB_MPD_DIR"
  printf '\n==== [%s] start: multipathd-rs daemon\n' "$(lab_uptime)" >>"$LAB_OUT/$log"
  # A simple command, not the lab_mpd function: $! must be the daemon itself, not a subshell.
  NO_COLOR=1 "$LAB_BIN/multipathd-rs" --dm-backend kernel --socket "$LAB_MPD_SOCK" \
    --config "$LAB_MPD_DIR/config.toml" --aliases-table "$LAB_MPD_DIR/aliases.toml" \
    --bindings-file "$LAB_MPD_DIR/bindings" daemon >>"$LAB_OUT/$log" 2>&1 &
  LAB_MPD_PID=$!
  lab_note "multipathd-rs daemon started, pid $LAB_MPD_PID (config $LAB_MPD_DIR/config.toml, socket $LAB_MPD_SOCK)"
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$LAB_MPD_PID" 2>/dev/null || { tail -n 20 "$LAB_OUT/$log" >&2; lab_fail "multipathd-rs daemon exited at start (see $log)"; }
    lab_mpd show status >/dev/null 2>&1 && return 0
    lab_sleep 0.2
  done
  lab_fail "multipathd-rs daemon did not answer on $LAB_MPD_SOCK within 60 s"
}

# lab_stop_pid PID SIGNAL NAME: send SIGNAL, wait up to 20 s for PID to end, then SIGKILL it;
# 0 when it ended by itself, 1 when it had to be killed.
lab_stop_pid() {
  local i
  kill -s "$2" "$1" 2>/dev/null
  for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || return 0; lab_sleep 0.2; done
  kill -9 "$1" 2>/dev/null
  lab_log "$3 pid $1 ignored SIG$2 for 20 s; killed"
  return 1
}

# lab_mpd_stop [SIGNAL]: send SIGNAL (TERM) to the daemon we started and wait for it (20 s);
# its exit status is left in LAB_MPD_RC.
lab_mpd_stop() {
  local sig="${1:-TERM}"
  [ -n "$LAB_MPD_PID" ] || return 0
  if ! lab_stop_pid "$LAB_MPD_PID" "$sig" multipathd-rs; then
    wait "$LAB_MPD_PID" 2>/dev/null
    LAB_MPD_PID=""
    return 1
  fi
  wait "$LAB_MPD_PID" 2>/dev/null
  LAB_MPD_RC=$?
  lab_note "multipathd-rs pid $LAB_MPD_PID stopped by SIG$sig (exit status $LAB_MPD_RC; 128+N = killed by signal N)"
  LAB_MPD_PID=""
}

# Multipath maps in the kernel: names, count.
# (One dmsetup; the names sorted here as sort(1) does, by the locale's collation.)
lab_mpath_maps() {
  local out name i j _
  local -a found=()
  out="$(dmsetup ls --target multipath 2>/dev/null)"
  while read -r name _; do
    [ -n "$name" ] && [ "$name" != No ] || continue
    for ((i = ${#found[@]}; i > 0; i--)); do
      j="${found[i - 1]}"
      [[ $name < $j ]] || break
      found[i]="$j"
    done
    found[i]="$name"
  done <<<"$out"
  ((${#found[@]})) && printf '%s\n' "${found[@]}"
  return 0
}
lab_mpath_count() { # one dmsetup, counted here
  local out n=0 name _
  out="$(dmsetup ls --target multipath 2>/dev/null)"
  while read -r name _; do [ -n "$name" ] && [ "$name" != No ] && n=$((n + 1)); done <<<"$out"
  printf '%s\n' "$n"
}
# lab_mpath_of_wwid WWID: the name of the map with uuid mpath-WWID.
# (One dmsetup, parsed here.)
lab_mpath_of_wwid() {
  local out name uuid _
  out="$(dmsetup info -c --noheadings -o name,uuid --separator ' ' 2>/dev/null)"
  while read -r name uuid _; do
    [ -n "$uuid" ] && [ "$uuid" = "mpath-$1" ] && printf '%s\n' "$name"
  done <<<"$out"
  return 0
}
# lab_dm_path_state MAP MAJ:MIN: A or F from `dmsetup status`, "absent" when not in the table.
lab_dm_path_state() {
  local out i
  local -a w
  out="$(dmsetup status "$1" 2>/dev/null)"
  while read -r -a w; do
    for ((i = 0; i < ${#w[@]} - 1; i++)); do
      [ "${w[i]}" = "$2" ] && { printf '%s\n' "${w[i + 1]:-absent}"; return 0; }
    done
  done <<<"$out"
  printf 'absent\n'
}
# lab_map_devnos MAP: the paths' major:minor of a map's table, sorted (as sort(1) does, by the
# locale's collation), space-separated, no newline. One dmsetup; the matching and sorting are
# done here.
lab_map_devnos() {
  local out m i j
  local -a found=()
  out="$(dmsetup table "$1" 2>/dev/null)"
  while [[ $out =~ [0-9]+:[0-9]+ ]]; do
    m="${BASH_REMATCH[0]}"
    out="${out#*"$m"}"
    # insertion sort (a map has a handful of paths)
    for ((i = ${#found[@]}; i > 0; i--)); do
      j="${found[i - 1]}"
      [[ $m < $j ]] || break
      found[i]="$j"
    done
    found[i]="$m"
  done
  local IFS=' '
  printf '%s' "${found[*]}"
}

# lab_alive PID: "alive" while PID runs, "gone" once it exited (a zombie counts as gone).
lab_alive() {
  local l
  {
    while read -r l; do
      case "$l" in State:*Z*) break ;; State:*) echo alive; return 0 ;; esac
    done <"/proc/$1/status"
  } 2>/dev/null
  echo gone
}

# Timing: lab_now (seconds, microseconds, no fork), lab_since T0 (seconds since T0, 3 decimals),
# lab_timing KEY VALUE (VALUE is JSON: a number, or a quoted string) into $LAB_OUT/timings.json.
lab_now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
lab_since() { awk -v a="$1" -v b="$(lab_now)" 'BEGIN { printf "%.3f", b - a }'; }
lab_timing() {
  local f="$LAB_OUT/timings.json"
  [ -s "$f" ] || echo '{}' >"$f"
  jq --arg k "$1" --argjson v "$2" '. + {($k): $v}' "$f" >"$f.tmp" && mv "$f.tmp" "$f"
  printf '# timing %s = %s\n' "$1" "$2" >>"$LAB_EVIDENCE"
  lab_log "timing $1 = $2"
}
# lab_poll TIMEOUT_S CMD...: poll CMD every 0.05 s; 0 when it succeeded, 1 on timeout (no fail).
# CMD's arguments are expanded once, at the call: to poll a value, use lab_is / lab_ge, which
# run their command at every attempt (`lab_poll 30 lab_is 4 lab_mpath_count`).
lab_is() { # EXPECTED CMD...: CMD's output is EXPECTED
  local want="$1"
  shift
  [ "$("$@" 2>/dev/null)" = "$want" ]
}
lab_ge() { # N CMD...: CMD's output is a number >= N
  local want="$1" v
  shift
  v=$("$@" 2>/dev/null)
  [ -n "$v" ] && [ "$v" -ge "$want" ] 2>/dev/null
}
# The daemon's view through its socket: number of maps; a path's dm_state ("absent" if unlisted).
lab_mpd_map_count() { lab_mpd show maps --json 2>/dev/null | jq '.maps | length'; }
lab_mpd_path_dm_state() {
  lab_mpd show paths --json 2>/dev/null | jq -r --arg d "$1" '[.paths[] | select(.dev == $d) | .dm_state][0] // "absent"'
}
lab_poll() {
  local tmo="$1" end
  shift
  end=$((${EPOCHREALTIME/[.,]/} + tmo * 1000000))
  until "$@" >/dev/null 2>&1; do
    ((${EPOCHREALTIME/[.,]/} > end)) && return 1
    lab_sleep 0.05
  done
}

# Background helpers of a scenario (I/O loops, monitors): pids in LAB_BG_PIDS, ended by
# lab_mpd_cleanup, which a scenario installs with `trap lab_mpd_cleanup EXIT`: it releases
# queued I/O (fail_if_no_path on every multipath map), ends the background pids and stops the
# daemon, so nothing of the scenario outlives it (the runner's teardown removes maps after).
LAB_BG_PIDS=""
lab_bg_add() { LAB_BG_PIDS="$LAB_BG_PIDS $1"; }
lab_mpd_cleanup() {
  local m p
  for m in $(lab_mpath_maps); do dmsetup message "$m" 0 fail_if_no_path >/dev/null 2>&1; done
  for p in $LAB_BG_PIDS; do kill "$p" 2>/dev/null; done
  for p in $LAB_BG_PIDS; do wait "$p" 2>/dev/null; done
  LAB_BG_PIDS=""
  lab_mpd_stop TERM >/dev/null 2>&1
  return 0
}

# I/O under faults: lab_io_start DEV [BYTES] writes random data over all of DEV (or its first
# BYTES, a multiple of 1 MiB) with O_DIRECT, keeps a shadow copy, then loops in the background: a fresh random 64 KiB region written with
# oflag=direct, read back with iflag=direct, compared; the shadow follows every successful
# write. $LAB_OUT/io.log: "time iteration region write_rc read_rc cmp_rc". lab_io_progress N
# DESC waits (LAB_IO_PROGRESS_TIMEOUT, 30 s) for N more iterations and asserts no error so far; lab_io_stop ends the
# loop; lab_io_verify asserts that all of DEV reads back equal to the shadow. The loop's pid and
# device are kept in $LAB_IO_DIR, so a later shell (a two-host job) can check and stop it.
LAB_IO_DIR=/tmp/lab-io
LAB_IO_PID=""
LAB_IO_DEV=""
lab_io_start() {
  local dev="$1" size
  LAB_IO_DEV="$dev"
  size=$(blockdev --getsize64 "$dev") || lab_fail "cannot read the size of $dev"
  [ -n "${2:-}" ] && [ "$2" -lt "$size" ] && size="$2"
  mkdir -p "$LAB_IO_DIR"
  echo "$dev" >"$LAB_IO_DIR/dev"
  rm -f "$LAB_IO_DIR/stop"
  : >"$LAB_OUT/io.log"
  head -c "$size" /dev/urandom >"$LAB_IO_DIR/shadow"
  lab_expect_ok "initial pattern ($size bytes) written to $dev (O_DIRECT)" \
    dd if="$LAB_IO_DIR/shadow" of="$dev" bs=1M oflag=direct status=none
  lab_io_verify "initial pattern reads back"
  (
    local i=0 r w rd c n=$((size / 65536))
    while [ ! -e "$LAB_IO_DIR/stop" ]; do
      r=$((i % n))
      head -c 65536 /dev/urandom >"$LAB_IO_DIR/pat"
      dd if="$LAB_IO_DIR/pat" of="$dev" bs=65536 seek="$r" count=1 oflag=direct status=none 2>>"$LAB_OUT/io.err"
      w=$?
      dd if="$dev" of="$LAB_IO_DIR/rd" bs=65536 skip="$r" count=1 iflag=direct status=none 2>>"$LAB_OUT/io.err"
      rd=$?
      cmp -s "$LAB_IO_DIR/pat" "$LAB_IO_DIR/rd"
      c=$?
      [ "$w" = 0 ] && dd if="$LAB_IO_DIR/pat" of="$LAB_IO_DIR/shadow" bs=65536 seek="$r" count=1 conv=notrunc status=none
      echo "$EPOCHREALTIME $i $r $w $rd $c" >>"$LAB_OUT/io.log"
      i=$((i + 1))
    done
  ) &
  LAB_IO_PID=$!
  echo "$LAB_IO_PID" >"$LAB_IO_DIR/pid"
  lab_bg_add "$LAB_IO_PID"
  lab_note "I/O loop on $dev: pid $LAB_IO_PID"
}
lab_io_iters() { lab_count <"$LAB_OUT/io.log"; }
lab_io_errors() { awk '$4 != 0 || $5 != 0 || $6 != 0' "$LAB_OUT/io.log" | lab_count; }
lab_io_progress() {
  local want=$(($(lab_io_iters) + $1))
  lab_poll "${LAB_IO_PROGRESS_TIMEOUT:-30}" lab_ge "$want" lab_io_iters || lab_fail "I/O stalled: $(lab_io_iters) iterations, wanted $want ($2)"
  lab_assert_eq "I/O errors so far ($2, $(lab_io_iters) iterations)" 0 "$(lab_io_errors)"
}
lab_io_stop() {
  local i
  [ -n "$LAB_IO_PID" ] || { read -r LAB_IO_PID <"$LAB_IO_DIR/pid"; } 2>/dev/null
  [ -n "$LAB_IO_PID" ] || return 0
  touch "$LAB_IO_DIR/stop"
  # Not our child when another shell started it: poll until it is gone.
  wait "$LAB_IO_PID" 2>/dev/null || for ((i = 0; i < 300; i++)); do kill -0 "$LAB_IO_PID" 2>/dev/null || break; lab_sleep 0.1; done
  LAB_IO_PID=""
  rm -f "$LAB_IO_DIR/pid"
}
lab_io_verify() {
  [ -n "$LAB_IO_DEV" ] || { read -r LAB_IO_DEV <"$LAB_IO_DIR/dev"; } 2>/dev/null
  lab_expect_ok "${1:-everything written reads back}: $LAB_IO_DEV = shadow" \
    sh -c "dd if='$LAB_IO_DEV' bs=1M count=$((($(stat -c %s "$LAB_IO_DIR/shadow") + 1048575) / 1048576)) iflag=direct status=none | head -c $(stat -c %s "$LAB_IO_DIR/shadow") | cmp - '$LAB_IO_DIR/shadow'"
}
