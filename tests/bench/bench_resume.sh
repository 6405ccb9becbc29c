#!/usr/bin/env bash
# What checkpointing costs in a real run, and how long a resume takes.
#
#   MOERUN=build/moerun tests/bench/bench_resume.sh MODEL_DIR
#
# Runs the bundled 240 requests on MODEL_DIR (make bench passes the small
# model) on 2 ranks with a checkpoint every second, and reports the time
# per checkpoint as `moerun run` measures it (sync of the part files, the
# gathers, the write and its fsyncs) and the share of wall time that costs
# at the default interval of 60 s.  Then runs the job again, stops it with
# SIGTERM midway and resumes it: the time from the signal to a durable
# stop, and from the resume's process start to its first new step.  The
# scratch folder is $MR_BENCH_DIR, else $TMPDIR, else /tmp: put it on the
# file system runs use, since fsync costs differ by orders of magnitude.
set -euo pipefail

model=$(cd "${1:?usage: bench_resume.sh MODEL_DIR}" && pwd)
moerun=$(cd "$(dirname "${MOERUN:?MOERUN must name the moerun binary}")" && pwd)/$(basename "$MOERUN")
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${MR_BENCH_DIR:-${TMPDIR:-/tmp}}/bench-resume-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
ln -s "$model" model
cp "$source_dir/examples/requests.jsonl" requests.jsonl

job() { # job NAME INTERVAL
    cat > "$1.ini" <<EOF
[job]
name = bench
run_dir = runs/$1
[model]
path = model
[input]
files = requests.jsonl
[generation]
max_tokens = 32
[parallel]
ranks = 2
[checkpoint]
interval_seconds = $2
EOF
}

# 1. Checkpoint cost in a whole run.
job whole 1
"$moerun" run whole.ini > whole.log 2>&1 || { cat whole.log; exit 1; }
line=$(grep '^checkpoints:' whole.log)
served=$(grep '^served' whole.log)
echo "run: $served"
echo "$line"
read -r n mean max < <(sed -E 's/^checkpoints: ([0-9]+) written.*, ([0-9.]+) ms each on average, ([0-9.]+) ms at most.*/\1 \2 \3/' <<< "$line")
awk -v n="$n" -v mean="$mean" -v max="$max" 'BEGIN {
    printf "checkpoint: %d in the run, %.2f ms each on average, %.2f ms at most; %.4f%% of wall time at the default 60 s interval\n", n, mean, max, 100 * mean / 1000 / 60 }'

# 2. Stop with SIGTERM once serving, then resume.
job stop 60
"$moerun" run stop.ini > stop.log 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    [ -d runs/stop/parts ] && break
    sleep 0.1
done
sleep 2
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" = 4 ] || { echo "the stopped run exited with $rc, not 4"; cat stop.log; exit 1; }
grep 'stopped by' stop.log
"$moerun" resume runs/stop > resume.log 2>&1 || { cat resume.log; exit 1; }
grep -E 'resuming from|resumed:' resume.log
resumed=$(sed -nE 's/.*resumed: ([0-9.]+) s from process start.*/\1/p' resume.log)
echo "resume: ${resumed} s from process start to the first new step (2 ranks, model loaded from the page cache)"
