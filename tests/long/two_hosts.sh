#!/usr/bin/env bash
# Two simulated hosts on one machine, and an Open MPI job across them.
#
#   tests/long/two_hosts.sh [all|selftest|moerun|cleanup]
#
# Each "host" is a Linux network namespace (mr-host-a, mr-host-b) with its own
# UTS hostname (hosta, hostb) and its own /etc/hosts; a veth pair joins them
# on 10.77.0.0/24.  The file system, the CPUs and /dev/shm stay shared, like
# a cluster whose nodes share an NFS home.  mpirun runs on hosta and starts
# its daemon (orted) on hostb through a generated "rsh agent" that plays the
# part of ssh: it enters hostb's namespaces, with a fresh login environment.
#
# Stages:
#   selftest  compile tests/long/two_hosts.c with mpicc and run it as 4 ranks,
#             2 per host; rank 0 checks hostnames, an allreduce, a 1 MiB ring
#             message and a variable forwarded with -x.  Always run by `all`.
#   moerun    run a 4-rank job (launcher = mpi) of $MOERUN on $MR_TINY_MODEL
#             across the two hosts, then the same job on 1 local rank, and
#             compare results.jsonl and errors.jsonl.  Run by `all` only when
#             MOERUN and MR_TINY_MODEL are both set; `moerun` requires them.
#   cleanup   only remove what an earlier (aborted) run left behind.
# `all` (the default) is selftest, then moerun.
#
# Needs root (namespaces, /etc/netns), ip (iproute2), unshare and hostname
# (util-linux/hostname), flock and timeout, mpirun and mpicc (Open MPI).
# Set MR_TWO_HOSTS_KEEP=1 to keep the temporary folder for a look afterwards.
# Exits 0 when every stage run passed; otherwise non-zero, naming the stage.
set -euo pipefail

# --- Names and addresses -----------------------------------------------------
NS_A=mr-host-a NS_B=mr-host-b          # network namespaces
HOST_A=hosta HOST_B=hostb              # their UTS hostnames
VETH_A=mr-veth-a VETH_B=mr-veth-b      # the veth pair, one end in each
IP_A=10.77.0.1 IP_B=10.77.0.2
SUBNET=10.77.0.0/24
TMP_PREFIX=/tmp/mr-two-hosts.          # temporary folders: $TMP_PREFIX<random>
LOCK=/run/lock/mr-two-hosts.lock       # one run at a time (the names are fixed)
SELFTEST_TIMEOUT=120                   # seconds for the self-test's mpirun
MOERUN_TIMEOUT=900                     # seconds for each moerun run

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

STAGE=startup   # what we are doing; the exit trap names it on failure
TMP=""          # this run's temporary folder, made after the checks
CHILD=""        # the pid run_bg waits for, which the exit trap ends

say() { printf 'two_hosts: %s\n' "$*"; }
die() { printf 'two_hosts: FAILED (stage: %s): %s\n' "$STAGE" "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

MODE=${1:-all}
case "$MODE" in
    all|selftest|moerun|cleanup) ;;
    -h|--help|help) usage; exit 0 ;;
    *) usage >&2; echo "two_hosts: unknown stage '$MODE'" >&2; exit 2 ;;
esac
[[ $# -le 1 ]] || { echo "two_hosts: one stage at most, got: $*" >&2; exit 2; }

# --- Preconditions -----------------------------------------------------------
STAGE=preflight
if [[ $(id -u) -ne 0 ]]; then
    die "must run as root: it creates network namespaces and files under /etc/netns (try: sudo $0 $MODE)"
fi
missing=()
for prog in ip unshare hostname flock timeout mpirun mpicc cmp diff; do
    command -v "$prog" >/dev/null 2>&1 || missing+=("$prog")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    die "missing programs: ${missing[*]} (Debian: iproute2, util-linux, hostname, coreutils, diffutils, openmpi-bin, libopenmpi-dev)"
fi
if [[ $MODE == moerun ]]; then
    [[ -n ${MOERUN:-} && -n ${MR_TINY_MODEL:-} ]] ||
        die "the moerun stage needs MOERUN (the moerun binary) and MR_TINY_MODEL (a model folder) set"
fi
if [[ -n ${MOERUN:-} && -n ${MR_TINY_MODEL:-} && $MODE != cleanup ]]; then
    [[ -x $MOERUN ]] || die "MOERUN=$MOERUN is not an executable file"
    [[ -d $MR_TINY_MODEL ]] || die "MR_TINY_MODEL=$MR_TINY_MODEL is not a folder"
    # Ranks on hostb see the same file system, but not our working folder:
    # hand them absolute paths.
    MOERUN=$(cd "$(dirname "$MOERUN")" && pwd)/$(basename "$MOERUN")
    MR_TINY_MODEL=$(cd "$MR_TINY_MODEL" && pwd)
fi

# One run at a time: the namespace names are fixed, and cleaning up leftovers
# would pull the ground from under a concurrent run.
exec 9>"$LOCK"
flock -n 9 || die "another two_hosts.sh run holds $LOCK"

# --- Cleanup -----------------------------------------------------------------
# Removes everything this script makes.  Safe to call when none of it exists:
# first thing (leftovers of an aborted run) and last thing (the exit trap).
cleanup() {
    local ns pid i child=$CHILD
    CHILD=""
    if [[ -n $child ]]; then
        # disown: no "Killed" notice from bash (timeout re-raises the
        # SIGKILL its command gets below on itself).
        disown "$child" 2>/dev/null || true
        kill -TERM "$child" 2>/dev/null || true
    fi
    for ns in "$NS_A" "$NS_B"; do
        if [[ -e /run/netns/$ns ]]; then
            # Processes still inside (mpirun, orted, ranks of a killed run)
            # would keep the namespace and its veth alive: end them by id.
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -KILL "$pid" 2>/dev/null || true
            done
            ip netns delete "$ns" 2>/dev/null || true
        fi
        rm -rf "/etc/netns/$ns"
    done
    # The child ends once what it ran in the namespaces is gone.
    for ((i = 0; i < 50; i++)); do
        if [[ -z $child ]] || ! kill -0 "$child" 2>/dev/null; then break; fi
        sleep 0.1
    done
    # Deleting a namespace deletes the veth end in it, and with it the peer;
    # a veth left in the root namespace by a half-done setup goes here.
    ip link delete "$VETH_A" 2>/dev/null || true
    ip link delete "$VETH_B" 2>/dev/null || true
    rmdir /etc/netns 2>/dev/null || true      # only if empty: it may predate us
    # Open MPI's shared-memory segments are named after the hostname.
    rm -f /dev/shm/vader_segment."$HOST_A".* /dev/shm/vader_segment."$HOST_B".*
    # Temporary folders: before a run, those of any earlier run (the lock
    # rules out a live one); after it, this run's, unless asked to keep it.
    if [[ -z $TMP ]]; then
        rm -rf "${TMP_PREFIX}"*
    elif [[ ${MR_TWO_HOSTS_KEEP:-0} == 1 ]]; then
        say "kept $TMP (the next run removes it)"
    else
        rm -rf "$TMP"
    fi
}

# The trap may fire inside a command whose output goes to a log file; it
# writes to the script's own stdout and stderr, kept as fds 7 and 8.
exec 7>&1 8>&2
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    exec 1>&7 2>&8
    cleanup
    if [[ $rc -ne 0 ]]; then
        printf 'two_hosts: FAILED at stage: %s (exit %d)\n' "$STAGE" "$rc" >&2
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

STAGE=cleanup-leftovers
cleanup
if [[ $MODE == cleanup ]]; then
    say "removed leftovers"
    exit 0
fi

TMP=$(mktemp -d "${TMP_PREFIX}XXXXXX")
chmod 755 "$TMP"

# --- Stage: the two hosts ----------------------------------------------------
STAGE=setup-namespaces
say "creating $NS_A ($HOST_A, $IP_A) and $NS_B ($HOST_B, $IP_B)"
ip netns add "$NS_A"
ip netns add "$NS_B"
# Create the pair with each end already in its namespace: the root namespace
# never gets an interface or an address.
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
ip -n "$NS_A" addr add "$IP_A/24" dev "$VETH_A"
ip -n "$NS_B" addr add "$IP_B/24" dev "$VETH_B"
for ns in "$NS_A" "$NS_B"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set "$VETH_A" up
ip -n "$NS_B" link set "$VETH_B" up

# `ip netns exec NS` bind-mounts each file of /etc/netns/NS/ over its
# namesake in /etc, in a private mount namespace: this is each host's
# /etc/hosts, so that both names resolve to veth addresses on both hosts.
for ns in "$NS_A" "$NS_B"; do
    mkdir -p "/etc/netns/$ns"
    cat >"/etc/netns/$ns/hosts" <<EOF
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
$IP_A $HOST_A
$IP_B $HOST_B
EOF
done

# in_host HOST CMD [ARG...]: run CMD on the simulated HOST, that is inside its
# network namespace (with its /etc/hosts) and a fresh UTS namespace whose
# hostname is HOST.  `ip netns exec` alone leaves the hostname unchanged.
IN_HOST=$TMP/in_host
cat >"$IN_HOST" <<EOF
#!/bin/bash
# in_host HOST CMD [ARG...]: run CMD on the simulated host HOST.
set -euo pipefail
case "\${1:-}" in
    $HOST_A) ns=$NS_A ;;
    $HOST_B) ns=$NS_B ;;
    *) echo "in_host: unknown host '\${1:-}' (want $HOST_A or $HOST_B)" >&2; exit 255 ;;
esac
host=\$1
shift
exec ip netns exec "\$ns" unshare --uts -- /bin/sh -c 'hostname "\$0" && exec "\$@"' "\$host" "\$@"
EOF

# The rsh agent mpirun calls instead of ssh: `AGENT [OPTIONS] HOST CMD...`.
# Like ssh it joins CMD into one command line for the remote shell, and the
# remote side starts from a login environment, not from mpirun's: so what
# the ranks on hostb need must really be forwarded with -x.  Every call is
# logged to agent.log.
AGENT=$TMP/rsh_agent
cat >"$AGENT" <<EOF
#!/bin/bash
set -euo pipefail
while [[ \$# -gt 0 && \$1 == -* ]]; do shift; done   # ssh-style options: none apply
[[ \$# -ge 2 ]] || { echo "rsh_agent: usage: rsh_agent HOST CMD..." >&2; exit 255; }
host=\$1
shift
printf '%s %s\n' "\$host" "\$*" >>"$TMP/agent.log"
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    HOME="\${HOME:-/root}" USER=root LOGNAME=root SHELL=/bin/sh LANG=C.UTF-8 \\
    "$IN_HOST" "\$host" /bin/sh -c "\$*"
EOF
chmod 755 "$IN_HOST" "$AGENT"

# Check the hosts before MPI gets involved: hostnames, name resolution, and
# a TCP connection from hostb to hosta over the veth.
STAGE=check-hosts
[[ $("$IN_HOST" "$HOST_A" hostname) == "$HOST_A" ]] || die "hostname in $NS_A is not $HOST_A"
[[ $("$AGENT" "$HOST_B" hostname) == "$HOST_B" ]] || die "hostname via the agent is not $HOST_B"
[[ $(hostname) != "$HOST_A" && $(hostname) != "$HOST_B" ]] || die "the machine's own hostname changed"
for h in "$HOST_A" "$HOST_B"; do
    "$IN_HOST" "$h" getent hosts "$HOST_A" | grep -q "^$IP_A " || die "$HOST_A does not resolve to $IP_A on $h"
    "$IN_HOST" "$h" getent hosts "$HOST_B" | grep -q "^$IP_B " || die "$HOST_B does not resolve to $IP_B on $h"
done
# Anything that answers (even "connection refused") proves the route; a
# timeout does not.
if ! "$IN_HOST" "$HOST_B" timeout 5 bash -c "exec 3<>/dev/tcp/$HOST_A/9" 2>"$TMP/probe.err"; then
    grep -q 'refused' "$TMP/probe.err" || die "no TCP route from $HOST_B to $HOST_A: $(cat "$TMP/probe.err")"
fi
say "hosts ready: $HOST_A=$IP_A, $HOST_B=$IP_B, joined by $VETH_A<->$VETH_B"

# run_bg CMD [ARG...]: run CMD in the background and wait for it.  Bash runs
# a trap only once the foreground command is over; waiting with `wait`
# instead lets Ctrl-C or a TERM clean up at once.  (mpirun under `timeout`
# is in a process group of its own: Ctrl-C does not reach it directly.)
run_bg() {
    local rc=0
    # The children get neither the lock (fd 9: they would keep it after
    # this script was killed) nor the saved stdout and stderr.
    "$@" 7>&- 8>&- 9>&- &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

# --- mpirun across the two hosts ----------------------------------------------
# Found by trying each setting out (Open MPI 4.1.4, Debian 12).  Needed:
#   plm_rsh_agent          our agent instead of ssh; it must hand the command
#                          to a shell, as ssh does: it comes as one quoted
#                          string (' orted --daemonize -mca ess "env" ...')
#   --allow-run-as-root    mpirun refuses root without it
#   distinct hostnames     not a flag: without the UTS namespaces both hosts
#                          are "vm", and the ranks' shared-memory segments
#                          (/dev/shm/vader_segment.<host>.<uid>.<job>.<local
#                          rank>) collide across hosts: segfaults in vader
#   -x NAME                for every variable the ranks on hostb need (the
#                          agent gives orted a login environment)
# Not needed on these two namespaces, which have no interface but lo and the
# veth, but set so that nothing can leave the veth on any machine:
#   oob/btl_tcp_if_include the veth subnet only, for the daemons' wire-up and
#                          for the ranks' MPI traffic
#   pml ob1, btl self,vader,tcp
#                          Debian's build also has the UCX PML, which picks
#                          its own transports and ignores the BTL settings
#   plm_rsh_no_tree_spawn  orted on hostb starts nothing further
#   --wdir                 remote ranks start in mpirun's folder when their
#                          host has it, else in $HOME: say which
#   orte_tmpdir_base       session folders inside $TMP, removed with it
# Not needed either: /etc/hosts entries (the agent picks the namespace from
# the name; daemons and ranks exchange IP addresses; hosta is local because
# it is mpirun's own hostname), --prefix (orted is /usr/bin/orted, on the
# agent's PATH), orte_keep_fqdn_hostnames (no dots in the names), and
# --oversubscribe (-H gives 2 slots per host).  The hosts files are there so
# that the names resolve as on a real cluster.
# Extra arguments go before the program (e.g. -x NAME).
mpirun_two_hosts() {
    local limit=$1 wdir=$2
    shift 2
    run_bg timeout --kill-after=10 "$limit" "$IN_HOST" "$HOST_A" \
        mpirun --allow-run-as-root --oversubscribe --bind-to none \
        -H "$HOST_A:2,$HOST_B:2" -np 4 \
        --mca plm_rsh_agent "$AGENT" \
        --mca plm_rsh_no_tree_spawn 1 \
        --mca oob_tcp_if_include "$SUBNET" \
        --mca pml ob1 \
        --mca btl self,vader,tcp \
        --mca btl_tcp_if_include "$SUBNET" \
        --mca orte_tmpdir_base "$TMP/ompi" \
        --wdir "$wdir" \
        "$@"
}

# Bytes through hostb's end of the veth so far: "sent received".
veth_bytes() {
    ip netns exec "$NS_B" cat "/sys/class/net/$VETH_B/statistics/tx_bytes" \
        "/sys/class/net/$VETH_B/statistics/rx_bytes" | tr '\n' ' '
}

# --- Stage: the MPI self-test --------------------------------------------------
run_selftest() {
    STAGE=selftest-compile
    mkdir -p "$TMP/selftest" "$TMP/ompi"
    mpicc -std=c11 -D_DEFAULT_SOURCE -O1 -Wall -Wextra -Werror \
        -o "$TMP/selftest/two_hosts" "$SCRIPT_DIR/two_hosts.c"

    STAGE=selftest-mpirun
    say "selftest: 4 ranks, 2 on $HOST_A and 2 on $HOST_B"
    local token="forwarded-$$-$RANDOM" tx0 rx0 tx1 rx1 rc=0 t0=$SECONDS
    export MR_TWO_HOSTS_TOKEN=$token
    read -r tx0 rx0 <<<"$(veth_bytes)"
    mpirun_two_hosts "$SELFTEST_TIMEOUT" "$TMP/selftest" -x MR_TWO_HOSTS_TOKEN \
        "$TMP/selftest/two_hosts" MR_TWO_HOSTS_TOKEN "$token" \
        >"$TMP/selftest/out.log" 2>&1 || rc=$?
    read -r tx1 rx1 <<<"$(veth_bytes)"
    sed 's/^/  | /' "$TMP/selftest/out.log"
    if [[ $rc -ne 0 ]]; then
        [[ $rc -eq 124 || $rc -eq 137 ]] && say "mpirun ran past ${SELFTEST_TIMEOUT}s"
        say "agent calls:"; sed 's/^/  | /' "$TMP/agent.log" 2>/dev/null || true
        die "mpirun exited $rc"
    fi
    grep -q '^selftest: .*; OK$' "$TMP/selftest/out.log" || die "rank 0 did not report OK"
    grep -q "^$HOST_B " "$TMP/agent.log" || die "mpirun did not start hostb's daemon through the agent"
    # The ring passes 1 MiB from hosta to hostb (rank 1 -> 2) and 1 MiB back
    # (rank 3 -> 0): both must show on the veth, or MPI went another way.
    local sent=$((tx1 - tx0)) received=$((rx1 - rx0))
    (( sent > 1048576 && received > 1048576 )) ||
        die "$HOST_B sent $sent and received $received bytes over the veth, want over 1 MiB each: MPI traffic took another path"
    say "selftest: OK in $((SECONDS - t0))s; over the veth $HOST_B sent $sent and received $received bytes"
}

# --- Stage: moerun on 4 ranks across two hosts vs on 1 local rank ---------------
# write_job FILE RANKS LAUNCHER RUN_DIR: the job both runs share, but for
# [parallel] and the run folder.  The shard count is fixed so that the plan
# is the same for both; one compute thread per rank (4 ranks on this box).
write_job() {
    cat >"$1" <<EOF
; Written by tests/long/two_hosts.sh: $2 rank(s), launcher $3.
[job]
name = two_hosts
run_dir = $4

[model]
path = $MR_TINY_MODEL

[input]
files = requests.jsonl
format = openai-batch
shards = 16

[generation]
max_tokens = 32
temperature = 0

[engine]
threads = 1
max_batch_tokens = 512
max_sequences = 64

[parallel]
ranks = $2
launcher = $3

[eplb]
mode = off
EOF
}

# Results name the second they were made ("created"): that field alone may
# differ between two runs, so it is zeroed before comparing.  Inside a JSON
# string a quote is always escaped, so the pattern only matches the field.
normalize() { sed -E 's/"created":[0-9]+/"created":0/g' "$1" >"$2"; }

# diff_excerpt A B: the first 5 lines that differ between A (4 ranks) and B
# (1 rank), each shown around its first differing character (JSON lines are
# long and start alike), and how many lines differ in all.
diff_excerpt() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        while (1) {
            ra = (getline la < a) > 0; rb = (getline lb < b) > 0
            if (!ra && !rb) break
            n++
            if (!ra) la = "(no such line)"
            if (!rb) lb = "(no such line)"
            if (la == lb) continue
            if (++bad > 5) continue
            i = 1
            while (i <= length(la) && substr(la, i, 1) == substr(lb, i, 1)) i++
            s = i > 60 ? i - 60 : 1
            printf "line %d, character %d:\n", n, i
            printf "  4 ranks: %s%s\n", (s > 1 ? "..." : ""), substr(la, s, 180)
            printf "  1 rank:  %s%s\n", (s > 1 ? "..." : ""), substr(lb, s, 180)
        }
        printf "%d of %d lines differ\n", bad, n
    }'
}

run_moerun() {
    STAGE=moerun-prepare
    local dir=$TMP/moerun rc=0 t0=$SECONDS
    mkdir -p "$dir" "$TMP/ompi"
    cp "$REPO_ROOT/examples/requests.jsonl" "$dir/requests.jsonl"
    write_job "$dir/job-mpi.ini" 4 mpi run-mpi
    write_job "$dir/job-local.ini" 1 local run-local
    "$MOERUN" validate "$dir/job-mpi.ini" >"$dir/validate.log" 2>&1 ||
        { cat "$dir/validate.log"; die "moerun validate refused the 4-rank job"; }
    # A moerun without MPI in it would start as 4 unrelated processes, each
    # serving the whole job into the same run folder, and the comparison
    # below would pass without any rank talking to another.  MPI_Init is in
    # the binary whether it links libmpi or looks it up with dlsym.
    grep -q 'MPI_Init' "$MOERUN" ||
        die "$MOERUN has no MPI in it (no MPI_Init in the binary): its 4 processes would each run the whole job alone, so launcher = mpi cannot be tested yet"

    STAGE=moerun-mpirun
    say "moerun: 4 ranks (launcher = mpi) across $HOST_A and $HOST_B"
    local tx0 rx0 tx1 rx1
    read -r tx0 rx0 <<<"$(veth_bytes)"
    mpirun_two_hosts "$MOERUN_TIMEOUT" "$dir" \
        -x MOERUN -x MR_TINY_MODEL -x OMP_NUM_THREADS=1 \
        "$MOERUN" run "$dir/job-mpi.ini" >"$dir/mpi.log" 2>&1 || rc=$?
    read -r tx1 rx1 <<<"$(veth_bytes)"
    tail -n "$([[ $rc -eq 0 ]] && echo 20 || echo 80)" "$dir/mpi.log" | sed 's/^/  | /'
    [[ $rc -eq 0 ]] || die "mpirun $MOERUN run job-mpi.ini exited $rc (MR_TWO_HOSTS_KEEP=1 keeps the whole log)"
    # For reference: launching 4 processes that never talk to each other
    # moves about 2-5 KB over the veth (daemon wire-up, forwarded output).
    say "moerun: 4-rank run took $((SECONDS - t0))s; over the veth $HOST_B sent $((tx1 - tx0)) and received $((rx1 - rx0)) bytes"

    STAGE=moerun-local
    t0=$SECONDS
    say "moerun: 1 rank (launcher = local), the reference"
    rc=0
    run_bg "$MOERUN" run "$dir/job-local.ini" >"$dir/local.log" 2>&1 || rc=$?
    tail -n 5 "$dir/local.log" | sed 's/^/  | /'
    [[ $rc -eq 0 ]] || die "$MOERUN run job-local.ini exited $rc"
    say "moerun: 1-rank run took $((SECONDS - t0))s"

    STAGE=moerun-compare
    local f failed=0
    for f in results.jsonl errors.jsonl; do
        [[ -f $dir/run-mpi/$f ]] || { say "missing run-mpi/$f"; failed=1; continue; }
        [[ -f $dir/run-local/$f ]] || { say "missing run-local/$f"; failed=1; continue; }
        normalize "$dir/run-mpi/$f" "$dir/mpi.$f"
        normalize "$dir/run-local/$f" "$dir/local.$f"
        if cmp -s "$dir/mpi.$f" "$dir/local.$f"; then
            say "moerun: $f identical ($(wc -l <"$dir/local.$f") lines)"
        else
            failed=1
            say "moerun: $f DIFFERS: 4 ranks $(wc -l <"$dir/mpi.$f") lines, 1 rank $(wc -l <"$dir/local.$f") lines"
            cmp "$dir/mpi.$f" "$dir/local.$f" 2>&1 | sed 's/^/  | /' || true
            say "first differences, from a little before the first differing character:"
            diff_excerpt "$dir/mpi.$f" "$dir/local.$f" | sed 's/^/  | /' || true
        fi
    done
    [[ $failed -eq 0 ]] || die "the 4-rank run's output differs from the 1-rank run's"
    say "moerun: OK"
}

case "$MODE" in
    all)
        run_selftest
        if [[ -n ${MOERUN:-} && -n ${MR_TINY_MODEL:-} ]]; then
            run_moerun
        else
            say "moerun stage skipped: set MOERUN and MR_TINY_MODEL to run it"
        fi ;;
    selftest) run_selftest ;;
    moerun) run_moerun ;;
esac
STAGE=finished
say "all stages run passed"
