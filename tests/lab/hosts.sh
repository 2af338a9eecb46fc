# tests/lab/hosts.sh: the host-side driver library of the two-host lab (bash). A two-host
# scenario (tests/lab/scenarios/4N-*.sh) runs on the machine that runs the lab, NOT in a guest:
# it sources this file and tells the two guests, host A and host B, what to do:
#
#   . "$LAB_HOSTS_LIB"                   # also sources lib.sh (lab_assert_eq, lab_fail, ...)
#   on A lab_wait_sd_disks 10            # several words: one command, each word quoted as is
#   wwids=$(on B 'lun-scan list --json | jq -r ".[].wwid"')   # one word: bash code (pipes, ...)
#   on A --timeout 300 some_long_job     # per-job timeout (default LAB_ON_TIMEOUT, 180 s)
#   on_both san_map                      # the same on A and B in parallel, lines prefixed "A: "/"B: "
#   on A io_loop & pa=$!; on B io_loop & pb=$!; wait $pa; wait $pb     # parallel, by hand
#
# `on H ...` runs the command on host H as root, as a bash job with lib.sh and lib-san.sh
# sourced, $LAB_BIN on PATH, cwd and LAB_OUT = $LAB_OUT/H (this scenario's per-host artifacts;
# the same path on the machine and in the guests); LAB_SHARED = the scenario's $LAB_OUT. Its
# stdout and stderr come back as on's stdout and stderr, its exit status as on's (124: killed at
# its timeout; 125: the host is not running). Every job, with its output and status, is
# recorded in the scenario's evidence.log. Each job is a new shell: state that must outlive it
# (daemons, I/O loops) lives in files (lib-san.sh's san_service_*, lib.sh's lab_io_*).
#
# A job does not inherit the driver's environment: variables named in LAB_ON_ENV (e.g.
# LAB_ON_ENV="LAB_IO_PROGRESS_TIMEOUT") are passed to every job with their current values.
#
# Needs LAB_OUT_DIR (tests/lab/out), LAB_LIB, LAB_OUT (the scenario's results directory).

# shellcheck disable=SC1090
. "$LAB_LIB"
LAB_ON_TIMEOUT="${LAB_ON_TIMEOUT:-180}"
LAB_HOSTS="A B"
mkdir -p "$LAB_OUT/A" "$LAB_OUT/B" # each host's artifacts (a job's cwd)

lab_host_ctl() { echo "$LAB_OUT_DIR/.hosts/$1"; }

# lab_host_alive H: its qemu runs and its agent said ready.
lab_host_alive() {
  local ctl pid
  ctl="$(lab_host_ctl "$1")"
  [ -e "$ctl/ready" ] || return 1
  pid=""
  { read -r pid <"$ctl/qemu.pid"; } 2>/dev/null
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

on() {
  local host="$1" tmo="$LAB_ON_TIMEOUT" ctl jobs id hout cmd rc deadline
  shift
  if [ "${1:-}" = --timeout ]; then
    tmo="$2"
    shift 2
  fi
  (($#)) || lab_fail "on $host: no command"
  ctl="$(lab_host_ctl "$host")"
  [ -d "$ctl" ] || lab_fail "on $host: there is no host $host (hosts: $LAB_HOSTS)"
  if (($# == 1)); then cmd="$1"; else cmd="$(printf '%q ' "$@")"; cmd="${cmd% }"; fi
  jobs="$ctl/jobs"
  hout="$LAB_OUT/$host"
  mkdir -p "$hout" "$jobs"
  id="$(date +%s%N)-$BASHPID-$RANDOM"
  {
    echo "# lab-job timeout=$tmo"
    printf 'export LAB_OUT=%q LAB_SHARED=%q LAB_SCENARIO=%q\n' "$hout" "$LAB_OUT" "${LAB_SCENARIO:-}"
    local v
    for v in ${LAB_ON_ENV:-}; do printf 'export %s=%q\n' "$v" "${!v:-}"; done
    # shellcheck disable=SC2016
    # The agent has lib.sh and lib-san.sh loaded (guest/agent): lab_job_init, not a new parse.
    printf '%s\n' 'cd "$LAB_OUT" || exit 125' \
      'if declare -F lab_job_init >/dev/null; then lab_job_init || exit 125; else . "$LAB_LIB" && . "$LAB_SAN_LIB" || exit 125; fi' \
      'export PATH="$LAB_BIN:$PATH"' "$cmd"
  } >"$jobs/$id.tmp"
  mv "$jobs/$id.tmp" "$jobs/$id.job"
  deadline=$((SECONDS + tmo + 30))
  local t0=$EPOCHREALTIME
  rc=""
  # Done when ID.rc holds a whole line (the agent writes it in one write; see guest/agent).
  until { read -r rc <"$jobs/$id.rc"; } 2>/dev/null; do
    if ! lab_host_alive "$host"; then
      rc=125
      printf 'on %s: host %s is not running (see tests/lab/out/console-%s.log)\n' "$host" "$host" "$host" >"$jobs/$id.err"
      break
    fi
    if ((SECONDS > deadline)); then
      rc=124
      printf 'on %s: no answer within %ss\n' "$host" "$((tmo + 30))" >"$jobs/$id.err"
      break
    fi
    lab_sleep 0.1
  done
  {
    flock 9
    printf '%s$ %s\n' "$host" "$cmd"
    [ -s "$jobs/$id.out" ] && cat "$jobs/$id.out"
    [ -s "$jobs/$id.err" ] && { echo '(stderr)'; cat "$jobs/$id.err"; }
    printf '[%s exit %s, %s s]\n' "$host" "$rc" "$(lab_since "$t0")"
  } 9>>"$LAB_EVIDENCE" >&9
  [ -e "$jobs/$id.out" ] && cat "$jobs/$id.out"
  [ -e "$jobs/$id.err" ] && cat "$jobs/$id.err" >&2
  rm -f "$jobs/$id".*
  return "$rc"
}

# on_both [--timeout S] CMD...: CMD on A and on B at the same time; their output (stdout and
# stderr) with each line prefixed "A: " or "B: ", A's first; 0 when both succeeded.
on_both() {
  local ta tb pa pb ra rb
  ta="$(mktemp)" tb="$(mktemp)"
  on A "$@" >"$ta" 2>&1 &
  pa=$!
  on B "$@" >"$tb" 2>&1 &
  pb=$!
  wait "$pa"
  ra=$?
  wait "$pb"
  rb=$?
  sed 's/^/A: /' "$ta"
  sed 's/^/B: /' "$tb"
  rm -f "$ta" "$tb"
  [ "$ra" = 0 ] && [ "$rb" = 0 ]
}

# on_ok DESC H CMD...: the job must succeed (ok/FAIL line like lab_expect_ok); prints its stdout.
on_ok() {
  local desc="$1" out rc t0=$EPOCHREALTIME
  shift
  out="$(on "$@")"
  rc=$?
  if [ "$rc" = 0 ]; then
    printf 'ok: %s (%s s)\n' "$desc" "$(lab_since "$t0")" | tee -a "$LAB_EVIDENCE" >&2
    [ -n "$out" ] && printf '%s\n' "$out"
    return 0
  fi
  [ -n "$out" ] && printf '%s\n' "$out" >&2
  lab_fail "$desc: 'on $*' failed with exit status $rc (see evidence.log)"
}

# on_fails DESC H CMD...: the job must fail (a refusal, or a positive control of an oracle).
on_fails() {
  local desc="$1" rc
  shift
  on "$@" >/dev/null 2>&1
  rc=$?
  [ "$rc" = 0 ] && lab_fail "$desc: 'on $*' succeeded but must fail"
  [ "$rc" = 125 ] && lab_fail "$desc: host $1 is not running"
  printf 'ok: %s (failed as expected, exit status %s)\n' "$desc" "$rc" | tee -a "$LAB_EVIDENCE" >&2
}
