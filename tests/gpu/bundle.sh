#!/usr/bin/env bash
# Packs what tests/gpu/check.sh needs on a GPU machine whose image is not
# Debian: moerun, gpu-check, bench_engine, bench_load and the test binary
# as built here (the last for the exact suites on that host's CPU, the
# benchmarks also for that CPU's figures), and the shared
# libraries they load (our Debian ones: inih, cJSON, Open MPI's, ...), all
# but glibc's own, which the other image has in a newer version.  Models
# are not packed: check.sh makes them there with `moerun make-model`, the
# same bytes as here.  Usage: bundle.sh BUILD_DIR OUT.tar.gz
set -euo pipefail
build=$1 out=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
bins=("$build/moerun" "$build/gpu-check" "$build/bench/bench_engine" "$build/bench/bench_load"
    "$build/moerun-tests")
cp "${bins[@]}" "$stage/bin/"
ldd "${bins[@]}" | awk '/=> \//{print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|librt|libpthread|libresolv)\.so|/ld-linux' |
    while read -r lib; do cp -L "$lib" "$stage/lib/"; done
tar czf "$out" -C "$stage" bin lib
echo "$out: $(du -h "$out" | cut -f1), $(ls "$stage/lib" | wc -l) libraries"
