#!/usr/bin/env bash
# A whole job end to end, the way a user runs it: `moerun run` on 256
# completions (prompts of 18 to 40 words, max_tokens 32, greedy) on
# MODEL_DIR (make bench passes the small model), one rank, in this order
# after a warm-up job (see below):
#   default   no [engine] keys: widths sized to the machine
#   narrow    max_sequences = 64, max_batch_tokens = 512 (the old defaults)
# For each: wall time, start-up (launch, model load, engine) apart from
# serving, tokens/s over the wall and over serving, and the process tree's
# peak RSS beside the weights plus the KV pool.  Then the default job's
# speed-up over the narrow one.  bench_engine's steady-state figures at the
# same concurrency are in the same `make bench` output above this.
#
#   MOERUN=build/moerun tests/bench/bench_job.sh MODEL_DIR
set -euo pipefail

model=$(cd "${1:?usage: bench_job.sh MODEL_DIR}" && pwd)
moerun=$(cd "$(dirname "${MOERUN:?MOERUN must name the moerun binary}")" && pwd)/$(basename "$MOERUN")
python=${MR_PYTHON:-python3}
work=$(mktemp -d "${MR_BENCH_DIR:-${TMPDIR:-/tmp}}/bench-job-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
ln -s "$model" model

"$python" - <<'EOF'
import json, random
words = ("the of and to in is was for on that with as by at from it an be this are which "
         "or his had not but what all were when we there can more if no out so said who "
         "will up one about would time them into has two could people other than then "
         "first water been call who oil its now find long down day did get come made may "
         "part over new sound take only little work know place year live me back give "
         "most very after thing our just name good sentence man think say great where help "
         "through much before line right too mean old any same tell boy follow came want "
         "show also around form three small set put end does another well large must big "
         "even such because turn here why ask went men read need land different home us "
         "move try kind hand picture again change off play spell air away animal house "
         "point page letter mother answer found study still learn should America world").split()
rng = random.Random(20)
with open("requests.jsonl", "w") as f:
    for i in range(256):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(18, 40)))
        f.write(json.dumps({"custom_id": f"r{i:03d}", "method": "POST", "url": "/v1/completions",
                            "body": {"model": "m", "prompt": prompt, "max_tokens": 32,
                                     "temperature": 0}}) + "\n")
EOF

job() { # job NAME [ENGINE KEYS...]
    local name=$1
    shift
    {
        printf '[job]\nname = bench\nrun_dir = runs/%s\n[model]\npath = model\n' "$name"
        printf '[input]\nfiles = requests.jsonl\n[parallel]\nranks = 1\n'
        if (($#)); then printf '[engine]\n'; printf '%s\n' "$@"; fi
    } > "$name.ini"
    /usr/bin/time -f '%M' -o "$name.rss" "$moerun" run "$name.ini" > "$name.log" 2>&1 ||
        { cat "$name.log"; exit 1; }
}

# Weights: the files; KV pool: [engine] kv_blocks (4096 by default) blocks of
# 16 tokens, K and V in f32 for every layer.
read -r weights kv < <("$python" - "$model" <<'EOF'
import glob, json, os, sys
d = sys.argv[1]
c = json.load(open(os.path.join(d, "config.json")))
w = sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*.safetensors")))
kv = 4096 * 16 * c["num_hidden_layers"] * 2 * c["num_key_value_heads"] * c.get("head_dim", c["hidden_size"] // c["num_attention_heads"]) * 4
print(w, kv)
EOF
)

report() { # report NAME
    "$python" - "$1" "$weights" "$kv" <<'EOF'
import json, sys
name, weights, kv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.load(open(f"runs/{name}/report.json"))
rss = int(open(f"{name}.rss").read().split()[-1]) * 1024
wall, start = r["wall_seconds"], r["startup_seconds"]
tokens = r["tokens"]["total"]
print(f"{name:8s} wall {wall:6.1f} s, starting {start:5.1f} s, serving {wall - start:6.1f} s; "
      f"{tokens / wall:6.0f} tokens/s over the wall, {tokens / (wall - start):6.0f} serving; "
      f"peak RSS {rss / 2**30:.2f} GiB = {rss / (weights + kv):.2f}x (weights {weights / 2**30:.2f} "
      f"+ KV pool {kv / 2**30:.2f} GiB)")
open(f"{name}.wall", "w").write(f"{wall} {wall - start}\n")
EOF
}

# A first job, not counted: on a VM the first process to touch this much
# fresh memory pays the host for it (a job started in 3-5 s rather than
# 1.4 s here, whichever width ran first), and the two widths should be
# timed alike.
job warmup 'max_sequences = 64' 'max_batch_tokens = 512'
job default
grep -h 'sequences and' default.log
report default
job narrow 'max_sequences = 64' 'max_batch_tokens = 512'
report narrow
read -r dw ds < default.wall
read -r nw ns < narrow.wall
awk -v dw="$dw" -v ds="$ds" -v nw="$nw" -v ns="$ns" 'BEGIN {
    printf "default over max_sequences = 64: %.2fx over the wall, %.2fx serving\n", nw / dw, ns / ds }'
cmp <(sed 's/"created":[0-9]*//' runs/default/results.jsonl) \
    <(sed 's/"created":[0-9]*//' runs/narrow/results.jsonl) >/dev/null ||
    { echo "bench_job: the two jobs' results differ"; exit 1; }
