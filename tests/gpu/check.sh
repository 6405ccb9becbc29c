#!/usr/bin/env bash
# The cuda backend's checks on a GPU machine, in under 8 minutes: a short
# table ($OUT/table.md) and one log per step, packed at the end into
# $OUT/logs.tar.gz (the device tool brings back at most 8 files).
#
# Run from the repository root, with build/gpu-bundle.tar.gz made on a
# build machine by `make gpu-bundle` (docs/gpu.md):
#   bash tests/gpu/check.sh
#
# Steps, each with a time limit taken from what is left of the 8 minutes:
#   device      the GPU, driver and runtime (nvidia-smi, gpu-check device)
#   exact-cpu   this host's cpu backend (AVX-512, likely) against exact.h
#   ops         every op in exact mode against cpu by memcmp, at 1, 3, 17,
#               64, 512 and 4096 rows (gpu-check ops; MLA to 512 rows)
#   model       the tiny model's logits, 256 batched completions against
#               cpu, and a request alone against the batch (gpu-check model)
#   families    the same on deepseek-tiny (bf16, FP8) and mixtral-tiny (FP8)
#   quickstart  the bundled job, one rank, backend = cuda and = cpu: the
#               same results bit for bit ("created" aside)
#   figures     exact mode's speed beside the copy bandwidth and cuBLAS
#   qwen3-30b   bench_engine on Qwen3-30B-A3B's shapes, weights made on the GPU
#   bench       bench_engine on the tiny model, cuda beside cpu
#   host-cpu    the host's CPU on the small preset, 2 threads: bench_load
#               (load against a plain read, five runs) and bench_engine
#               short; issue 20's figures off the 2-core build VM.  Last,
#               in whatever time is left (about 3 minutes on its own)
#
# MR_GPU_CHECK_AGAINST=exact runs it all with the exact backend in the
# GPU's place: a dry run of the script on a machine without a GPU.
# STEPS="model quickstart" runs only the steps named (a rerun of what
# failed, in less of the device's time).
set -u
OUT=${OUT:-/tmp/moerun-gpu-check}
BUNDLE=${BUNDLE:-build/gpu-bundle.tar.gz}
BUDGET=${BUDGET:-470}
TESTED=${MR_GPU_CHECK_AGAINST:-cuda}
logs=$OUT/logs
mkdir -p "$logs"
work=$(mktemp -d /tmp/moerun-gpu.XXXXXX)
start=$(date +%s)
table="$OUT/table.md"
{
    echo "# tests/gpu/check.sh on $(hostname), $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| step | result | seconds | what |"
    echo "|---|---|---|---|"
} >"$table"

# step NAME LIMIT_SECONDS WHAT COMMAND...: runs COMMAND with its output in
# $logs/NAME.log, under the smaller of LIMIT and what is left.
step() {
    local name=$1 limit=$2 what=$3
    shift 3
    if [[ -n ${STEPS:-} && " $STEPS " != *" $name "* ]]; then
        echo "| $name | SKIPPED | 0 | $what: not in STEPS |" >>"$table"
        return
    fi
    local left=$((BUDGET - ($(date +%s) - start)))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        echo "| $name | SKIPPED | 0 | $what: out of time |" >>"$table"
        return
    fi
    local t0=$(date +%s) rc result
    # bash -c: a step may be one of the functions below (exported).
    timeout --kill-after=5 "$limit" bash -c '"$@"' step "$@" >"$logs/$name.log" 2>&1
    rc=$?
    local took=$(($(date +%s) - t0))
    case $rc in
    0) result=PASS ;;
    124) result="TIMEOUT ($limit s)" ;;
    137) ((took >= limit)) && result="TIMEOUT ($limit s)" || result="KILLED (out of memory?)" ;;
    *) result="FAIL (exit $rc)" ;;
    esac
    local fails
    fails=$(grep -c '^FAIL' "$logs/$name.log" 2>/dev/null)
    [[ $fails -gt 0 ]] && what="$what; $fails FAIL lines"
    echo "| $name | $result | $took | $what |" >>"$table"
    echo "check.sh: $name: $result" >&2
}

tar xzf "$BUNDLE" -C "$work" || {
    echo "| bundle | FAIL | 0 | cannot unpack $BUNDLE (make gpu-bundle) |" >>"$table"
    exit 1
}
export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_WAIT_POLICY=passive
export bin=$work/bin models=$work/models work TESTED
# cuBLAS for the figures' dense GEMM: the one PyTorch's environment ships.
if [[ -z ${MR_CUBLAS:-} ]] && command -v python3 >/dev/null; then
    # The nvidia-cublas wheel's or torch's own copy, wherever site-packages is.
    MR_CUBLAS=$(python3 -c 'import glob, site, sys
dirs = site.getsitepackages() + [site.getusersitepackages()] + sys.path
hits = [f for d in dirs for f in sorted(glob.glob(d + "/nvidia/cu*/lib/libcublas.so*") +
        glob.glob(d + "/nvidia/cublas/lib/libcublas.so*") + glob.glob(d + "/torch/lib/libcublas.so*"))]
print(hits[0] if hits else "")' 2>/dev/null)
    [[ -z $MR_CUBLAS ]] && MR_CUBLAS=$(ls /usr/local/cuda*/lib64/libcublas.so* 2>/dev/null | head -1)
    export MR_CUBLAS
fi

device() {
    command -v nvidia-smi >/dev/null && nvidia-smi
    echo "cuBLAS for the figures: ${MR_CUBLAS:-none found}"
    "$bin/gpu-check" device
}
export -f device
step device 30 "GPU, driver, runtime" device

"$bin/moerun" make-model "$models/tiny" --preset tiny >>"$logs/device.log" 2>&1 ||
    echo "| models | FAIL | 0 | moerun make-model (device.log) |" >>"$table"

# The host's own CPU against exact.h: GPU machines' CPUs have AVX-512,
# which the build machines lack, and exact mode's oracle is cpu's bits.
exact_cpu() {
    grep -o -m1 'avx512[a-z_]*' /proc/cpuinfo | head -1 || echo "no AVX-512"
    MR_TINY_MODEL=$models/tiny "$bin/moerun-tests" -j4 --filter 'exact/*' &&
        MR_TINY_MODEL=$models/tiny "$bin/moerun-tests" --filter 'exact_model/*'
}
export -f exact_cpu
step exact-cpu 40 "this host's cpu backend (AVX-512?) vs exact.h, memcmp" exact_cpu
step ops 120 "every op, exact vs cpu, memcmp, rows 1..4096" "$bin/gpu-check" ops
step model 100 "tiny model: logits, 256 completions (f32 and bf16 KV), alone vs batched" \
    "$bin/gpu-check" model "$models/tiny"
# The other families and weight formats, as the model step checks the
# tiny model: DeepSeek-V3 (MLA, grouped sigmoid router, shared experts,
# YaRN) in bf16 and FP8 block-scaled weights, Mixtral in FP8.
families() {
    local preset dtype
    for preset in deepseek-tiny:bf16 deepseek-tiny:fp8 mixtral-tiny:fp8; do
        dtype=${preset#*:} preset=${preset%:*}
        echo "== $preset $dtype"
        "$bin/moerun" make-model "$work/$preset-$dtype" --preset "$preset" --dtype "$dtype" &&
            "$bin/gpu-check" model "$work/$preset-$dtype" || return 1
    done
}
export -f families
step families 100 "deepseek-tiny bf16 and FP8, mixtral-tiny FP8: as the model step" families

# The quickstart job on one rank, on each backend; results compared with
# each body's "created" set aside.
quickstart() {
    local backend
    for backend in "$TESTED" cpu; do
        "$bin/moerun" run examples/quickstart.ini --force-new \
            --set "model.path=$models/tiny" --set parallel.ranks=1 \
            --set "engine.backend=$backend" --set "job.run_dir=$work/qs-$backend" || return 1
    done
    python3 - "$work/qs-$TESTED" "$work/qs-cpu" <<'EOF'
import json, sys
def rows(folder, name):
    out = []
    for line in open(f"{folder}/{name}"):
        r = json.loads(line)
        body = (r.get("response") or {}).get("body") or {}
        body.pop("created", None)  # the one field that may differ
        out.append(json.dumps(r, sort_keys=True))
    return sorted(out)
same = True
for name in ("results.jsonl", "errors.jsonl"):
    a, b = rows(sys.argv[1], name), rows(sys.argv[2], name)
    differ = sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
    print(("PASS" if differ == 0 else "FAIL"), name, f"{len(a)} records, {differ} differ")
    same &= differ == 0
sys.exit(0 if same else 1)
EOF
}
export -f quickstart
step quickstart 80 "quickstart job, 1 rank, $TESTED vs cpu, results bit for bit" quickstart

step figures 40 "exact-mode speed, copy GB/s, cuBLAS bf16" "$bin/gpu-check" figures
# Qwen3-30B-A3B's shapes with random bf16 weights made on the GPU: the
# published config.json, the tiny model's tokenizer (ids only are used).
qwen3_30b() {
    local dir=$work/qwen3-30b-a3b
    mkdir -p "$dir"
    cp tests/bench/qwen3-30b-a3b/config.json "$models"/tiny/tokenizer*.json "$dir/"
    "$bin/bench_engine" "$dir" 16 "$TESTED" synthetic
}
export -f qwen3_30b
step qwen3-30b 90 "synthetic Qwen3-30B-A3B on $TESTED: prefill 2048, decode 1..1024 seqs" qwen3_30b
bench() {
    "$bin/bench_engine" "$models/tiny" 16 "$TESTED" && "$bin/bench_engine" "$models/tiny" 16 cpu
}
export -f bench
step bench 30 "bench_engine, tiny model, $TESTED then cpu" bench

# The host's CPU, not the GPU: whether the load keeps up with a plain read
# where the VM that builds moerun does not (its first touch of fresh
# memory is slow), and the engine's 2-thread figures on another CPU.
host_cpu() {
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node\(s\))'
    echo "hypervisor flag on $(grep -c hypervisor /proc/cpuinfo) of $(nproc) CPUs"
    "$bin/moerun" make-model "$work/small" --preset small &&
        "$bin/bench_load" "$work/small" 5 2 && "$bin/bench_engine" "$work/small" 2 cpu short
}
export -f host_cpu
step host-cpu 200 "this host's CPU, small preset, 2 threads: bench_load, bench_engine short" host_cpu

echo >>"$table"
echo "total $(($(date +%s) - start)) s of $BUDGET" >>"$table"
cat "$table"
tar czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$logs"
rm -rf "$work"
! grep -q '| \(FAIL\|TIMEOUT\)' "$table"
