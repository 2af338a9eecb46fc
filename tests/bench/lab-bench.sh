# tests/bench/lab-bench.sh: helpers of the lab benchmark scenarios
# (tests/lab/scenarios/9x-bench-*.sh), sourced inside the guest after $LAB_LIB.
#
# Every measurement is one JSON line {metric, tool, rep, seconds, error} in
# $LAB_OUT/measurements.jsonl; bench_finish turns them into $LAB_OUT/results.json, which
# `cargo run --release -p bench` collects from tests/lab/out/. A measurement that
# cannot be made is recorded with seconds = null and the reason, never with an invented figure.
#
# Tools: "multipath-tools" (Debian's package, default configuration apart from
# `find_multipaths no`, `multipathd -d -s` as Debian's unit starts it) and "multipathd-rs"
# (`$LAB_BIN/multipathd-rs daemon`, kernel backend, built-in configuration).

BENCH_REPS=5
# The bench writes the repetition count here before booting the guest.
# shellcheck disable=SC1091
[ -r "$LAB_WS/target/bench/lab-params.env" ] && . "$LAB_WS/target/bench/lab-params.env"
BENCH_JSONL="$LAB_OUT/measurements.jsonl"
: >"$BENCH_JSONL"
BENCH_PID=""
BENCH_TOOL=""
BENCH_POLL=0.05 # seconds between two looks at the maps while waiting for them

bench_now() { echo "$EPOCHREALTIME"; }
bench_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

# bench_record METRIC TOOL REP SECONDS [ERROR]: SECONDS empty = not measured.
bench_record() {
  local secs="${4:-}" err="${5:-}"
  jq -cn --arg m "$1" --arg t "$2" --argjson r "$3" --arg s "$secs" --arg e "$err" \
    '{metric: $m, tool: $t, rep: $r, seconds: (if $s == "" then null else ($s | tonumber) end),
      error: (if $e == "" then null else $e end)}' >>"$BENCH_JSONL"
  if [ -n "$secs" ]; then lab_note "bench: $1 $2 rep $3: ${secs}s"; else lab_note "bench: $1 $2 rep $3: not measured: $err"; fi
}

# bench_profile LINE: one sentence of where a measured time went (results.json's profile).
BENCH_PROFILE="$LAB_OUT/profile.txt"
: >"$BENCH_PROFILE"
bench_profile() {
  printf '%s\n' "$*" >>"$BENCH_PROFILE"
  lab_note "profile: $*"
}

# bench_finish TOPOLOGY: writes results.json.
bench_finish() {
  jq -s --arg sc "$LAB_SCENARIO" --arg topo "$1" --argjson reps "$BENCH_REPS" \
    --arg k "$(uname -r)" --arg mpt "$(bench_mpt_version)" --rawfile prof "$BENCH_PROFILE" \
    '{scenario: $sc, topology: $topo, reps: $reps, kernel: $k, multipath_tools: $mpt, measurements: .,
      profile: ($prof | split("\n") | map(select(. != "")))}' \
    "$BENCH_JSONL" >"$LAB_OUT/results.json"
  lab_note "results: $(jq -c '[.measurements[] | [.metric, .tool, .seconds]]' "$LAB_OUT/results.json")"
}

bench_mpt_version() {
  local v
  v=$(dpkg-query -W -f '${Version}' multipath-tools 2>/dev/null)
  echo "${v:-unknown}"
}

# Number of multipath maps the kernel has.
bench_maps() { dmsetup ls --target multipath 2>/dev/null | grep -vc '^No devices'; }

# Names of the multipath maps, sorted.
bench_map_names() { dmsetup ls --target multipath 2>/dev/null | awk '$1 != "No" { print $1 }' | sort; }

bench_alive() { [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; }

bench_log_tail() { tail -n 3 "$LAB_OUT/$BENCH_TOOL.log" 2>/dev/null | tr '\n' ' ' | tr -d '"' | cut -c1-300; }

# Paths in every multipath table (each major:minor is one path).
bench_paths() {
  dmsetup table --target multipath 2>/dev/null |
    awk '{ for (i = 4; i <= NF; i++) if ($i ~ /^[0-9]+:[0-9]+$/) n++ } END { print n + 0 }'
}

# bench_wait_maps N TIMEOUT [PATHS]: until N maps exist, and with PATHS until the multipath
# tables hold PATHS paths in all (a map made from its first path alone is not redundant yet).
# Prints the error and returns 1 on failure. A scenario may define bench_hint N PATHS, a check
# that forks nothing, to skip the dmsetup calls (several processes, ~0.1 s of CPU under
# emulation) while it fails: at hundreds of maps the oracle would otherwise take CPU from the
# daemon it times.
BENCH_ERR=""
bench_ready() { [ "$(bench_maps)" -ge "$1" ] && { [ -z "$2" ] || [ "$(bench_paths)" -ge "$2" ]; }; }
bench_hint() { return 0; }
# Microseconds since the epoch, without a process.
bench_us() { BENCH_US=${EPOCHREALTIME//[.,]/}; }
# bench_sleep SECONDS: sleeps without a process (read times out on a FIFO nobody writes; the
# guest has no /dev/fd for a process substitution), or with sleep(1) when no FIFO can be made.
BENCH_SLEEP_FD=""
bench_sleep() {
  if [ -z "$BENCH_SLEEP_FD" ]; then
    local f="/tmp/bench-sleep.$$"
    BENCH_SLEEP_FD=none
    if mkfifo "$f" 2>/dev/null; then
      exec {BENCH_SLEEP_FD}<>"$f"
      rm -f "$f"
    fi
  fi
  if [ "$BENCH_SLEEP_FD" = none ]; then sleep "$1"; else read -rt "$1" -u "$BENCH_SLEEP_FD"; fi
  return 0
}
# BENCH_POLLS / BENCH_LOOKS: the wait's polls, and those whose hint passed (dmsetup ran).
# BENCH_SEEN_US: when the poll that succeeded began (its hint read the kernel's state then; the
# dmsetup look that confirmed it may take seconds to fork under emulation); BENCH_DONE_US: when
# the wait returned.
BENCH_POLLS=0
BENCH_LOOKS=0
BENCH_SEEN_US=""
BENCH_DONE_US=""
bench_wait_maps() {
  local n="$1" tmo="$2" paths="${3:-}" t0 p
  bench_us
  t0=$BENCH_US
  BENCH_POLLS=0 BENCH_LOOKS=0 BENCH_SEEN_US=""
  while :; do
    ((++BENCH_POLLS))
    bench_us
    p=$BENCH_US
    if bench_hint "$n" "$paths"; then
      ((++BENCH_LOOKS))
      bench_ready "$n" "$paths" && break
    fi
    if ! bench_alive; then
      BENCH_ERR="the $BENCH_TOOL daemon exited before $n maps existed (it made $(bench_maps), $(bench_paths) paths): $(bench_log_tail)"
      return 1
    fi
    bench_us
    if ((BENCH_US - t0 > tmo * 1000000)); then
      BENCH_ERR="only $(bench_maps) of $n maps with $(bench_paths) of ${paths:-any} paths after ${tmo}s"
      return 1
    fi
    bench_sleep "$BENCH_POLL"
  done
  BENCH_SEEN_US=$p
  bench_us
  BENCH_DONE_US=$BENCH_US
}

# bench_us_since T0 US: seconds from T0 (an $EPOCHREALTIME) to US (microseconds, bench_us).
bench_us_since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b / 1e6 - a }'; }

bench_clean_state() {
  rm -f /etc/multipath/bindings /etc/multipath/wwids /etc/multipathd-rs/aliases.toml
}

# bench_start TOOL: starts a daemon in the background (BENCH_PID).
bench_start() {
  BENCH_TOOL="$1"
  case "$1" in
    multipath-tools)
      mkdir -p /etc/multipath
      printf 'defaults {\n\tfind_multipaths no\n}\n' >/etc/multipath.conf
      /sbin/multipathd -d -s >>"$LAB_OUT/$1.log" 2>&1 &
      ;;
    multipathd-rs)
      rm -f /etc/multipath.conf
      "$LAB_BIN/multipathd-rs" daemon >>"$LAB_OUT/$1.log" 2>&1 &
      ;;
  esac
  BENCH_PID=$!
}

# bench_stop: stops the daemon and removes every multipath map (both leave maps in place) with
# $BENCH_REMOVE_MAPS (a function; lab_dm_remove_all unless the scenario sets another).
BENCH_REMOVE_MAPS=lab_dm_remove_all
bench_stop() {
  if bench_alive; then
    if [ "$BENCH_TOOL" = multipath-tools ]; then
      multipathd shutdown >/dev/null 2>&1 || kill -TERM "$BENCH_PID" 2>/dev/null
    else
      kill -TERM "$BENCH_PID" 2>/dev/null
    fi
    local i
    for i in $(seq 100); do bench_alive || break; sleep 0.1; done
    bench_alive && kill -9 "$BENCH_PID" 2>/dev/null
  fi
  wait "$BENCH_PID" 2>/dev/null
  BENCH_PID=""
  pkill -x multipathd 2>/dev/null
  lab_settle 30
  "$BENCH_REMOVE_MAPS" || lab_log "maps left after stopping $BENCH_TOOL: $(bench_map_names | tr '\n' ' ')"
  rm -f /etc/multipath.conf
  bench_clean_state
}

# bench_path_flag MAP DEVNO: the path's state (A or F) in `dmsetup status`.
bench_path_flag() {
  dmsetup status "$1" 2>/dev/null | awk -v d="$2" '{ for (i = 1; i < NF; i++) if ($i == d) { print $(i + 1); exit } }'
}

# bench_first_path MAP: "devno sdX" of the map's first path in its table.
bench_first_path() {
  local devno
  devno=$(dmsetup table "$1" 2>/dev/null | grep -oE '\b[0-9]+:[0-9]+\b' | head -n1)
  [ -n "$devno" ] || return 1
  echo "$devno $(basename "$(readlink -f "/sys/dev/block/$devno")")"
}

# bench_wait_flag MAP DEVNO FLAG TIMEOUT: sets BENCH_SECS to the seconds since BENCH_T0 (taken
# by the caller) when the flag shows; returns 1 on timeout or a dead daemon (BENCH_ERR set).
bench_wait_flag() {
  local map="$1" devno="$2" want="$3" tmo="$4"
  while [ "$(bench_path_flag "$map" "$devno")" != "$want" ]; do
    if ! bench_alive; then
      BENCH_ERR="the $BENCH_TOOL daemon exited: $(bench_log_tail)"
      return 1
    fi
    if awk -v a="$BENCH_T0" -v b="$EPOCHREALTIME" -v t="$tmo" 'BEGIN { exit !(b - a > t) }'; then
      BENCH_ERR="no $want for $devno in dmsetup status within ${tmo}s"
      return 1
    fi
    sleep 0.02
  done
  BENCH_SECS=$(bench_since "$BENCH_T0")
}

# Clock ticks of a process, all its threads (utime + stime, fields 14 and 15 of /proc/PID/stat;
# the command name in field 2 may hold spaces, so count from after its ')').
bench_proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null; }

# Non-idle clock ticks of the whole guest (/proc/stat: user nice system irq softirq steal).
bench_guest_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# bench_task_ticks PID: one line per thread of PID, "NAME TICKS" (utime + stime), the name with
# a trailing -NUMBER cut (checker-3 -> checker), from /proc/PID/task/*/stat; bash
# builtins only (a fork costs tens of ms under emulation).
bench_task_ticks() {
  local f line name rest
  local -a v
  for f in /proc/"$1"/task/*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    name=${line#*(}
    name=${name%%) *}
    rest=${line##*) }
    read -ra v <<<"$rest"
    [[ $name =~ ^(.*)-[0-9:]+$ ]] && name=${BASH_REMATCH[1]}
    printf '%s %d\n' "${name:-?}" "$((v[11] + v[12]))"
  done
}

# bench_thread_split BEFORE AFTER SECONDS: from two bench_task_ticks outputs, CPU seconds per
# second by thread name over SECONDS, the busiest first ("sweep 0.061, checker 0.030, ...").
# A thread that came or went in between counts from 0.
bench_thread_split() {
  awk -v s="$3" -v hz="$(getconf CLK_TCK)" '
    FNR == NR { b[$1] += $2; next }
    { a[$1] += $2 }
    END {
      for (n in a) { d = (a[n] - b[n]) / hz / s; if (d > 0) out[n] = d }
      while (length(out)) {
        m = ""; for (n in out) if (m == "" || out[n] > out[m]) m = n
        printf "%s%s %.3f", sep, m, out[m]; sep = ", "; delete out[m]
      }
      if (sep == "") printf "none measurable"
    }' "$1" "$2"
}

# bench_sampler_start PID / bench_sampler_stop: every 0.5 s one line "REALTIME GUEST_BUSY_TICKS
# PID_TICKS PID_SYSTEM_TICKS" into $LAB_OUT/cpu-samples-<tool>.txt (builtins only), so a profile can say how busy
# the guest's CPUs were, and how much of it was the daemon, up to any moment of a cold start.
BENCH_SAMPLER_PID=""
bench_sampler_start() {
  local pid="$1" out="$LAB_OUT/cpu-samples-$BENCH_TOOL.txt"
  : >"$out"
  (
    local line rest _c u n sy _i _w irq sirq st
    local -a v
    while :; do
      read -r _c u n sy _i _w irq sirq st _ </proc/stat
      line="" v=()
      { read -r line <"/proc/$pid/stat"; } 2>/dev/null
      rest=${line##*) }
      [ -n "$line" ] && read -ra v <<<"$rest"
      printf '%s %d %d %d\n' "$EPOCHREALTIME" "$((u + n + sy + irq + sirq + st))" "$((${v[11]:-0} + ${v[12]:-0}))" "${v[12]:-0}" >>"$out"
      bench_sleep 0.5
    done
  ) &
  BENCH_SAMPLER_PID=$!
}
bench_sampler_stop() {
  [ -n "$BENCH_SAMPLER_PID" ] && kill "$BENCH_SAMPLER_PID" 2>/dev/null
  wait "$BENCH_SAMPLER_PID" 2>/dev/null
  BENCH_SAMPLER_PID=""
}

# bench_cpu_until TOOL T0 SECS: "guest busy X of Y CPU-s (Z%), the daemon D CPU-s (K in the
# kernel)" from the
# first sample to the last one at or before T0 + SECS (T0 a realtime), or "no samples".
bench_cpu_until() {
  awk -v t0="$2" -v secs="$3" -v hz="$(getconf CLK_TCK)" -v cpus="$(nproc)" '
    NR == 1 { ft = $1; fg = $2; fd = $3; fs = $4 }
    $1 <= t0 + secs { lt = $1; lg = $2; ld = $3; ls = $4 }
    END {
      if (lt == "" || lt <= ft) { printf "no samples"; exit }
      w = lt - ft
      printf "over %.1f s from %.1f s: guest busy %.2f of %.2f CPU-s (%.0f%%), the daemon %.2f CPU-s (%.2f of them in the kernel: its ioctls and sysfs reads)",
        w, ft - t0, (lg - fg) / hz, w * cpus, 100 * (lg - fg) / hz / (w * cpus), (ld - fd) / hz, (ls - fs) / hz
    }' "$LAB_OUT/cpu-samples-$1.txt"
}

# bench_idle_cpu TOOL REP WINDOW [SUFFIX]: records idle_cpu (the daemon's own CPU seconds per second
# over WINDOW seconds of doing nothing) and idle_cpu_guest (the whole guest's, udevd and kernel
# workers included, in CPU seconds per second over its 2 CPUs), each metric's name + SUFFIX.
bench_idle_cpu() {
  local tool="$1" rep="$2" window="$3" sfx="${4:-}" hz p0 g0 p1 g1 t0 el
  hz=$(getconf CLK_TCK)
  t0=$(bench_now)
  bench_task_ticks "$BENCH_PID" >"$LAB_OUT/threads-$tool-$rep.0"
  p0=$(bench_proc_ticks "$BENCH_PID") g0=$(bench_guest_ticks)
  sleep "$window"
  p1=$(bench_proc_ticks "$BENCH_PID") g1=$(bench_guest_ticks)
  el=$(bench_since "$t0")
  bench_task_ticks "$BENCH_PID" >"$LAB_OUT/threads-$tool-$rep.1"
  if [ -z "$p0" ] || [ -z "$p1" ] || ! bench_alive; then
    BENCH_ERR="the $BENCH_TOOL daemon exited during the idle window: $(bench_log_tail)"
    bench_record "idle_cpu$sfx" "$tool" "$rep" "" "$BENCH_ERR"
    bench_record "idle_cpu_guest$sfx" "$tool" "$rep" "" "$BENCH_ERR"
    return 1
  fi
  bench_record "idle_cpu$sfx" "$tool" "$rep" "$(awk -v a="$p0" -v b="$p1" -v hz="$hz" -v s="$el" 'BEGIN { printf "%.4f", (b - a) / hz / s }')"
  bench_record "idle_cpu_guest$sfx" "$tool" "$rep" "$(awk -v a="$g0" -v b="$g1" -v hz="$hz" -v s="$el" 'BEGIN { printf "%.4f", (b - a) / hz / s }')"
  bench_profile "$tool rep $rep, idle CPU by thread (CPU s/s over ${el} s): $(bench_thread_split "$LAB_OUT/threads-$tool-$rep.0" "$LAB_OUT/threads-$tool-$rep.1" "$el")"
}
