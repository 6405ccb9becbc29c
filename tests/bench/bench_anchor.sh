#!/usr/bin/env bash
# llama.cpp beside moerun on this machine, on the same weights: issue 20's
# anchor (docs/PERFORMANCE.md) measured here rather than carried from the
# machine that filed it.
#
# llama.cpp comes from the npm registry: the node-llama-cpp package (pinned
# below) ships llama.cpp's source as a git bundle, from which this builds
# llama-batched-bench, llama-bench and llama-simple for this CPU
# (GGML_NATIVE).  MODEL_DIR goes to GGUF bf16 with llama.cpp's gguf-py
# (tests/bench/to_gguf.py).  The work folder keeps the build, and the GGUF
# while it is newer than the model.  First llama-simple and `moerun run`
# continue one prompt greedily, and must agree (the same model).  Then
# ROUNDS rounds, each in this order:
#   llama-batched-bench  32-token prompts, 16 decode steps, batches 1, 16,
#                        64 and 256 (the anchor's run), THREADS threads
#   bench_engine         MODEL_DIR, THREADS threads, the cpu backend
#   llama-bench          tg128 (single-stream decode)
# and a table per round and of the medians: prefill and decode tokens/s of
# both, their ratios at each batch, and moerun's decode at 64 sequences over
# llama.cpp's tg128, against issue 20's aims (1.5x, 1.0x and 3.5x), and at
# one sequence over tg128 as well.
#
#   BENCH_ENGINE=build/bench/bench_engine MOERUN=build/moerun \
#     tests/bench/bench_anchor.sh MODEL_DIR [ROUNDS] [THREADS]
#
# MR_ANCHOR_DIR is the work folder (default: build/anchor beside
# BENCH_ENGINE's build); MR_PYTHON the python3 with numpy.
set -euo pipefail

NODE_LLAMA_CPP=3.22.1 # its llama.cpp: commit de3ff81, libllama 0.5.0, ggml 0.25.1

usage="usage: bench_anchor.sh MODEL_DIR [ROUNDS] [THREADS]"
model=$(cd "${1:?$usage}" && pwd)
rounds=${2:-3}
threads=${3:-2}
[[ $rounds =~ ^[1-9][0-9]*$ && $threads =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench_anchor: ROUNDS and THREADS are counts from 1 ($usage)"; exit 2; }
engine=$(cd "$(dirname "${BENCH_ENGINE:?BENCH_ENGINE must name bench_engine}")" && pwd)/$(basename "$BENCH_ENGINE")
moerun=$(cd "$(dirname "${MOERUN:?MOERUN must name the moerun binary}")" && pwd)/$(basename "$MOERUN")
python=${MR_PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
work=${MR_ANCHOR_DIR:-$(dirname "$(dirname "$engine")")/anchor}
mkdir -p "$work"
work=$(cd "$work" && pwd)
src=$work/llama.cpp-$NODE_LLAMA_CPP
bin=$src/build/bin

tools=(llama-batched-bench llama-bench llama-simple)
built=1
for t in "${tools[@]}"; do [[ -x $bin/$t ]] || built=0; done
if ((!built)); then
    echo "bench_anchor: building llama.cpp from node-llama-cpp@$NODE_LLAMA_CPP (a few minutes, once)"
    rm -rf "$src" "$work/package"
    (cd "$work" && npm pack --silent "node-llama-cpp@$NODE_LLAMA_CPP" > /dev/null) ||
        { echo "bench_anchor: npm could not fetch node-llama-cpp@$NODE_LLAMA_CPP"; exit 1; }
    tar xzf "$work/node-llama-cpp-$NODE_LLAMA_CPP.tgz" -C "$work" package/llama/gitRelease.bundle
    git -c advice.detachedHead=false clone --quiet "$work/package/llama/gitRelease.bundle" "$src"
    rm -rf "$work/package" "$work/node-llama-cpp-$NODE_LLAMA_CPP.tgz"
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
        > "$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; exit 1; }
    cmake --build "$src/build" -j "$(nproc)" --target "${tools[@]}" \
        > "$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
fi

gguf_file=$work/$(basename "$model").gguf
if [[ ! -s $gguf_file || $model/model.safetensors -nt $gguf_file ]]; then
    echo "bench_anchor: converting $model to GGUF bf16"
    PYTHONPATH=$src/gguf-py "$python" "$here/to_gguf.py" "$model" "$gguf_file.part"
    mv "$gguf_file.part" "$gguf_file"
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/bench-anchor-XXXXXX")
trap 'rm -rf "$logs"' EXIT

# The same model on both sides, or the ratios compare different work:
# llama-simple's greedy continuation of a prompt against `moerun run`'s on
# a one-request job, text for text (bytes that are not whole UTF-8
# characters read as U+FFFD on both sides).
prompt="the water was long and the people said that they would come back"
"$bin/llama-simple" -m "$gguf_file" -n 16 "$prompt" > "$logs/simple" 2> "$logs/simple.err" ||
    { cat "$logs/simple.err"; exit 1; }
"$python" - "$prompt" > "$logs/agree.jsonl" <<'EOF'
import json, sys
print(json.dumps({"custom_id": "agree", "method": "POST", "url": "/v1/completions",
                  "body": {"model": "m", "prompt": sys.argv[1], "max_tokens": 16,
                           "temperature": 0}}))
EOF
printf '[job]\nname = agree\nrun_dir = %s/agree\n[model]\npath = %s\n[input]\nfiles = %s\n[parallel]\nranks = 1\n' \
    "$logs" "$model" "$logs/agree.jsonl" > "$logs/agree.ini"
"$moerun" run "$logs/agree.ini" > "$logs/agree.log" 2>&1 || { cat "$logs/agree.log"; exit 1; }
"$python" - "$prompt" "$logs/simple" "$logs/agree/results.jsonl" <<'EOF'
import json, sys
prompt, simple, results = sys.argv[1], sys.argv[2], sys.argv[3]
out = open(simple, "rb").read().decode("utf-8", errors="replace")
if not out.startswith(prompt):
    raise SystemExit(f"bench_anchor: llama-simple did not echo the prompt first: {out!r}")
theirs = out[len(prompt):].removesuffix("\n")
ours = json.loads(open(results).readline())["response"]["body"]["choices"][0]["text"]
if theirs != ours:
    raise SystemExit(f"bench_anchor: llama.cpp and moerun continue the prompt differently, so the "
                     f"GGUF is not the same model:\n  llama.cpp {theirs!r}\n  moerun    {ours!r}")
print(f"greedy 16 tokens after {prompt!r}, llama.cpp and moerun alike: {ours!r}")
EOF
# llama.cpp maps the GGUF file (its default, and its fastest here: loading
# into memory of its own ran decode at 0.3-0.9x) and so pays a page fault
# per page of weights it first touches in a process, which lands on its
# first batch: batch 1 runs twice and the second counts, and one run before
# the rounds touches the file's pages after a conversion.
"$bin/llama-batched-bench" -m "$gguf_file" -c 16384 -npp 32 -ntg 16 -npl 1 -t "$threads" \
    > "$logs/warmup" 2>&1 || { cat "$logs/warmup"; exit 1; }
for ((i = 1; i <= rounds; i++)); do
    "$bin/llama-batched-bench" -m "$gguf_file" -c 16384 -npp 32 -ntg 16 -npl 1,1,16,64,256 \
        -t "$threads" > "$logs/batched.$i" 2>&1 || { cat "$logs/batched.$i"; exit 1; }
    "$engine" "$model" "$threads" cpu > "$logs/engine.$i" 2>&1 || { cat "$logs/engine.$i"; exit 1; }
    "$bin/llama-bench" -m "$gguf_file" -p 0 -n 128 -t "$threads" > "$logs/tg128.$i" 2>&1 ||
        { cat "$logs/tg128.$i"; exit 1; }
done

"$python" - "$logs" "$rounds" <<'EOF'
import re, statistics, sys
logs, rounds = sys.argv[1], int(sys.argv[2])
batches = (1, 16, 64, 256)

def llama_rows(path):
    """llama-batched-bench's table: batch -> (prefill, decode) tokens/s; a batch's last row."""
    rows = {}
    for line in open(path):
        f = [c.strip() for c in line.split("|")[1:-1]]
        if len(f) == 10 and f[0].isdigit():
            rows[int(f[2])] = (float(f[5]), float(f[7]))
    return rows

def engine_rows(path):
    """bench_engine's table: batch -> (prefill, decode) tokens/s, and its peak and bandwidth."""
    rows, text = {}, open(path).read()
    for line in text.splitlines():
        f = line.split()
        if len(f) == 10 and f[0].isdigit():
            rows[int(f[0])] = (float(f[2]), float(f[5]))
    m = re.search(r"FMA peak .*?: ([0-9.]+) GFLOP/s; memory read bandwidth ([0-9.]+) GB/s", text)
    return rows, m.group(0) if m else "peak not found"

def tg128(path):
    for line in open(path):
        if "tg128" in line:
            return float(line.split("|")[-2].split()[0])
    raise SystemExit(f"bench_anchor: no tg128 row in llama-bench's output:\n{open(path).read()}")

ratios = {b: ([], []) for b in batches}
stream, single = [], []
for i in range(1, rounds + 1):
    ll, (ours, machine) = llama_rows(f"{logs}/batched.{i}"), engine_rows(f"{logs}/engine.{i}")
    tg = tg128(f"{logs}/tg128.{i}")
    print(f"round {i}: {machine}; llama.cpp tg128 {tg:.1f} tokens/s")
    print(" batch  prefill: llama.cpp  moerun  ratio   decode: llama.cpp  moerun  ratio")
    for b in batches:
        if b not in ll or b not in ours:
            raise SystemExit(f"bench_anchor: round {i} has no batch {b} row")
        rp, rd = ours[b][0] / ll[b][0], ours[b][1] / ll[b][1]
        ratios[b][0].append(rp)
        ratios[b][1].append(rd)
        print(f" {b:5d}  {ll[b][0]:18.1f} {ours[b][0]:7.1f} {rp:5.2f}x  {ll[b][1]:17.1f} "
              f"{ours[b][1]:7.1f} {rd:5.2f}x")
    stream.append(ours[64][1] / tg)
    single.append(ours[1][1] / tg)
    print(f" decode at 64 sequences over llama.cpp's tg128: {stream[-1]:.2f}x; "
          f"at 1: {single[-1]:.2f}x")

print(f"medians of {rounds} rounds (aims: prefill 1.5x, decode 1.0x, decode at 64 over tg128 3.5x)")
for b in batches:
    p, d = statistics.median(ratios[b][0]), statistics.median(ratios[b][1])
    print(f" batch {b:3d}: prefill {p:.2f}x ({'met' if p >= 1.5 else 'missed'}), "
          f"decode {d:.2f}x ({'met' if d >= 1.0 else 'missed'})")
s = statistics.median(stream)
print(f" decode at 64 over tg128: {s:.2f}x ({'met' if s >= 3.5 else 'missed'}); at 1 over tg128 "
      f"{statistics.median(single):.2f}x (tg128 decodes 128 steps 5 times: steadier than the "
      "batched run's 16 steps at batch 1)")
EOF
