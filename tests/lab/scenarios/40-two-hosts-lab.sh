#!/bin/bash
# 40-two-hosts-lab: the two-host harness itself (issue 13), on its real kernels. The agent
# contract (exit status, stdout and stderr apart, jobs of both hosts and of one host really run
# at the same time: each job waits for the other's file), faults that stay on the host that made
# them (A: a path offline, A: controller c1's paths deleted, B: every path to lun2 deleted; the
# other host keeps all 10 paths; san_restore brings them back), the guest network both ways, and
# the services later scenarios build on: sanlock with wdmd on softdog and lvmlockd start on both
# hosts, and both hosts join one sanlock lockspace on the shared lock LUN and see each other in
# it (control: before B joins, A does not see host 2).
# lab-timeout: 900
set -u
. "$LAB_HOSTS_LIB"

# ------------------------------------------------------------------ the agent contract
rc=0
on A 'echo to-stdout; echo to-stderr >&2; exit 3' >"$LAB_OUT/contract.out" 2>"$LAB_OUT/contract.err" || rc=$?
lab_assert_eq "on: exit status comes back" 3 "$rc"
lab_assert_eq "on: stdout comes back" to-stdout "$(cat "$LAB_OUT/contract.out")"
lab_assert_eq "on: stderr comes back apart" to-stderr "$(cat "$LAB_OUT/contract.err")"
lab_assert_eq "on: argv words keep their spaces" "a b|c" "$(on B printf '%s|%s' 'a b' c)"
lab_assert_eq "on: jobs run on the host they are sent to" "A B" "$(on A hostname) $(on B hostname)"
# A job past its time limit ends with status 124, with what it started in its foreground (the
# agent runs jobs in subshells and ends them itself); a daemon started with setsid lives on.
rc=0
t0=$SECONDS
on A --timeout 3 'setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! >$LAB_SHARED/daemon.pid; sleep 301 & echo $! >$LAB_SHARED/child.pid; wait' >/dev/null 2>&1 || rc=$?
lab_assert_eq "on: a job past its --timeout ends with status 124" 124 "$rc"
(( SECONDS - t0 < 30 )) || lab_fail "on: the timed-out job took $((SECONDS - t0)) s to end (limit 3 s)"
lab_assert_eq "on: the timed-out job's own child was ended" gone \
  "$(on A 'lab_alive $(cat $LAB_SHARED/child.pid)')"
lab_assert_eq "control: the daemon it started with setsid lives on" alive \
  "$(on A 'lab_alive $(cat $LAB_SHARED/daemon.pid)')"
on A 'kill $(cat $LAB_SHARED/daemon.pid)'
# Rendezvous: each job creates its file and waits for the other's; only concurrent jobs finish.
rdv() { echo "touch \$LAB_SHARED/rdv-$1; lab_poll 60 test -e \$LAB_SHARED/rdv-$2 || exit 1"; }
on A "$(rdv a b)" & pa=$!
on B "$(rdv b a)" & pb=$!
wait "$pa"; ra=$?; wait "$pb"; rb=$?
lab_assert_eq "jobs on A and B run at the same time (rendezvous)" "0 0" "$ra $rb"
on A "$(rdv c d)" & pa=$!
on A "$(rdv d c)" & pb=$!
wait "$pa"; ra=$?; wait "$pb"; rb=$?
lab_assert_eq "two jobs on A run at the same time (rendezvous)" "0 0" "$ra $rb"
on_fails "control: a rendezvous nobody joins fails" A --timeout 20 "$(rdv e never | sed 's/60/3/')"

# ------------------------------------------------------------------ the guest network
on_ok "A pings B (10.99.0.2)" A 'busybox ping -c 2 -W 3 "$LAB_PEER_IP"' >/dev/null
on_ok "B pings A (10.99.0.1)" B 'busybox ping -c 2 -W 3 "$LAB_PEER_IP"' >/dev/null
on_fails "control: nobody answers at 10.99.0.3" A 'busybox ping -c 1 -W 2 10.99.0.3'

# ------------------------------------------------------------------ faults stay on their host
paths() { on "$1" san_disk_count; }
offline() { on "$1" 'san_offline_paths | tr "\n" " " | sed "s/ $//"'; }
pa=$(on A 'san_lun_paths lun0 | head -n1')
on_ok "A: path $pa (lun0) offline" A "san_path_offline $pa" >/dev/null
lab_assert_eq "A: offline paths" "$pa" "$(offline A)"
lab_assert_eq "B: offline paths while A has one" "" "$(offline B)"
on_ok "A: restore" A san_restore >/dev/null
lab_assert_eq "A: offline paths after restore" "" "$(offline A)"

on_ok "A: controller c1's paths deleted" A 'san_ctrl_remove c1' >/dev/null
lab_assert_eq "A: paths left" 5 "$(paths A)"
lab_assert_eq "A: paths left are all behind c0" "c0 c0 c0 c0 c0" \
  "$(on A 'for d in $(san_disks); do san_ctrl_of $d; done | tr "\n" " " | sed "s/ $//"')"
lab_assert_eq "B: paths while A lost a controller" 10 "$(paths B)"
on_ok "A: restore (rescan)" A san_restore >/dev/null
lab_assert_eq "A: paths after restore" 10 "$(paths A)"

on_ok "B: every path to lun2 deleted" B 'san_lun_gone lun2' >/dev/null
lab_assert_eq "B: paths left" 8 "$(paths B)"
lab_assert_eq "B: paths to lun2" "" "$(on B 'san_lun_paths lun2')"
lab_assert_eq "A: paths to lun2 while B lost it" 2 "$(on A 'san_lun_paths lun2 | lab_count')"
on_ok "B: restore (rescan)" B san_restore >/dev/null
lab_assert_eq "B: paths to lun2 after restore" 2 "$(on B 'san_lun_paths lun2 | lab_count')"
on A san_map >"$LAB_OUT/A/san-map-end.txt"
on B san_map >"$LAB_OUT/B/san-map-end.txt"

# ------------------------------------------------------------------ sanlock + wdmd (softdog), lvmlockd
on_ok "A: wdmd (softdog) and sanlock daemon started" A --timeout 120 san_sanlock_start >/dev/null
on_ok "B: wdmd (softdog) and sanlock daemon started" B --timeout 120 san_sanlock_start >/dev/null
for h in A B; do
  on "$h" 'sanlock client status; wdmd --dump' >"$LAB_OUT/$h/sanlock-status.txt" 2>&1
  # The kernel's view: wdmd holds the softdog device open (and said it armed it).
  lab_assert_match "$h: wdmd holds the watchdog device open" '^/dev/watchdog' \
    "$(on "$h" 'find /proc/$(san_service_pid wdmd)/fd -lname "/dev/watchdog*" -printf "%l\n"')"
  lab_assert_match "$h: wdmd armed softdog" 'watchdog[0-9]* armed' "$(cat "$LAB_OUT/$h/wdmd.log")"
  lab_assert_eq "$h: the watchdog is softdog, active (sysfs)" "Software Watchdog active" \
    "$(on "$h" 'echo "$(san_attr /sys/class/watchdog/watchdog0/identity) $(san_attr /sys/class/watchdog/watchdog0/state)"')"
done
on_ok "A: lvmlockd (sanlock) started" A --timeout 120 san_lvmlockd_start >/dev/null
on_ok "B: lvmlockd (sanlock) started" B --timeout 120 san_lvmlockd_start >/dev/null
on A 'lvmlockctl --info' >"$LAB_OUT/A/lvmlockctl-info.txt" 2>&1

# One lockspace on the shared lock LUN (through one path on each host; the same disk), io_timeout
# 2 s (add_lockspace -o 2, written in each host_id lease): sanlock's 10 s default made each join
# take about 25 s.
la=$(on A 'san_lun_paths lock | head -n1')
lb=$(on B 'san_lun_paths lock | head -n1')
on_ok "A: lockspace 'lab' written on the lock LUN ($la)" A "sanlock direct init -s lab:0:/dev/$la:0" >/dev/null
on_ok "A joins lockspace lab as host 1" A --timeout 300 "sanlock client add_lockspace -o 2 -s lab:1:/dev/$la:0" >/dev/null
seen() { # HOST ID: host_status of lockspace lab on HOST lists ID with a timestamp
  on "$1" "sanlock client host_status -s lab" | awk -v i="$2" '$1 == i && $2 == "timestamp" && $3 != 0 { f = 1 } END { exit !f }'
}
on A 'sanlock client host_status -s lab' >"$LAB_OUT/A/host-status-before-b.txt" 2>&1
seen A 2 && lab_fail "control: A sees host 2 in lockspace lab before B joined"
printf 'ok: control: A does not see host 2 before B joins\n' | tee -a "$LAB_EVIDENCE"
on_ok "B joins lockspace lab as host 2 (its own path $lb to the same LUN)" B --timeout 300 \
  "sanlock client add_lockspace -o 2 -s lab:2:/dev/$lb:0" >/dev/null
for i in $(seq 120); do seen A 2 && seen B 1 && break; sleep 1; done
on A 'sanlock client host_status -s lab' >"$LAB_OUT/A/host-status.txt" 2>&1
on B 'sanlock client host_status -s lab' >"$LAB_OUT/B/host-status.txt" 2>&1
seen A 2 || lab_fail "A does not see host 2 in lockspace lab (see A/host-status.txt)"
seen B 1 || lab_fail "B does not see host 1 in lockspace lab (see B/host-status.txt)"
printf 'ok: A and B see each other in lockspace lab on the shared lock LUN\n' | tee -a "$LAB_EVIDENCE"
on_ok "A leaves lockspace lab" A --timeout 120 "sanlock client rem_lockspace -s lab:1:/dev/$la:0" >/dev/null
on_ok "B leaves lockspace lab" B --timeout 120 "sanlock client rem_lockspace -s lab:2:/dev/$lb:0" >/dev/null
for h in A B; do
  on_ok "$h: lvmlockd, sanlock and wdmd stop" "$h" --timeout 120 'san_service_stop lvmlockd; san_sanlock_stop' >/dev/null
  # A watchdog left armed would reset the host 60 s later.
  lab_assert_eq "$h: softdog disarmed after wdmd stopped (sysfs)" inactive \
    "$(on "$h" 'san_attr /sys/class/watchdog/watchdog0/state')"
done
