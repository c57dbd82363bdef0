#!/usr/bin/env bash
# Build the libFuzzer targets with clang (ASan+UBSan) and run each for a bounded time.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shopt -s nullglob
targets=(tests/fuzz/fuzz_*.c)
[ ${#targets[@]} -eq 0 ] && { echo "no fuzz targets"; exit 0; }
sh scripts/deps.sh fuzz
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DRF_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)"
for src in "${targets[@]}"; do
  name=$(basename "$src" .c)
  corpus=tests/fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  echo "-- $name for ${secs}s"
  ./build-fuzz/fuzz/"$name" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 "$work" 2>&1 | tail -n 12
  rm -rf "$work"
done
