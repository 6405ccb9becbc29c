#!/bin/bash
# Runs each fuzz target for FUZZ_SECONDS on its seeds (tests/fuzz/corpus/T)
# and on what earlier runs found (BUILD/corpus/T, where new finds go), then
# prints one line per target.  Exits 1 when any target found a crash, a
# leak or a hang; libFuzzer keeps the input under BUILD/crashes/T/ and the
# log under BUILD/logs/T.log.
#
# usage: run.sh BUILD TARGET...
set -u
build=$1
shift
seconds=${FUZZ_SECONDS:-30}
# The targets write every input to a scratch file: on a disk that costs
# most of the time, in memory a fifth of it.  A TMPDIR given wins.  One
# folder holds every target's scratch files, so that what a crashed target
# left goes too.
base=${TMPDIR:-}
if [ -z "$base" ]; then
    base=/tmp
    [ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
fi
scratch=$(mktemp -d "$base/moerun-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch
# A figure from libFuzzer's final stats in log $1.
figure() { sed -n "s/^stat::$2: *//p" "$1" | tail -1; }
found=0
printf '%-11s %12s %9s %8s  %s\n' target executions exec/s corpus result
for t in "$@"; do
    corpus=$build/corpus/$t crashes=$build/crashes/$t log=$build/logs/$t.log
    mkdir -p "$corpus" "$crashes" "$build/logs"
    # -timeout: an input that takes this long is a hang, not a slow parse.
    "$build/fuzz/$t" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        result="nothing found"
    else
        found=1
        kept=$(ls -t "$crashes" | head -1)
        result="FOUND (exit $rc): ${kept:+$crashes/$kept, }see $log"
    fi
    printf '%-11s %12s %9s %8s  %s\n' "$t" "$(figure "$log" number_of_executed_units)" \
        "$(figure "$log" average_exec_per_sec)" "$(ls "$corpus" | wc -l)" "$result"
done
if [ $found -ne 0 ]; then
    echo "fuzz: reproduce with $build/fuzz/TARGET CRASH-FILE (tests/fuzz/README.md)" >&2
    exit 1
fi
