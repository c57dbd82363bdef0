#!/usr/bin/env bash
# Scale check for the big MoE families: a synthetic checkpoint at the published width (ramfit synth
# --like PRESET, as many layers as asked / as the disk allows), then `ramfit analyse` under
# /usr/bin/time: peak RSS (the target for Llama-4-Scout is under 1 GiB) and throughput; then the
# plan of the full-depth shape from a synthetic profile (bench_plan f).
# Usage: bench/scale_families.sh [--bin build/ramfit] [--work DIR] [--layers N] [--mode mlx|opt] PRESET...
set -euo pipefail
bin=build/ramfit; work=${TMPDIR:-/tmp}/ramfit-scale; layers=4; mode=mlx; threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;; --work) work=$2; shift 2 ;; --layers) layers=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;; --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || set -- llama-4-scout
mkdir -p "$work"
for preset in "$@"; do
  dir="$work/$preset-${layers}L"
  if [ ! -f "$dir/config.json" ]; then
    echo "== synth $preset, $layers layers, full width -> $dir"
    "$bin" synth "$dir" --like "$preset" --layers "$layers" --threads "$threads" --force >/dev/null 2>&1
  fi
  size=$(du -sb "$dir" | cut -f1)
  echo "== analyse $preset ($layers layers, $(numfmt --to=iec "$size")B of BF16), mode $mode, $threads threads"
  /usr/bin/time -v "$bin" analyse "$dir" --mode "$mode" --threads "$threads" -o "$work/$preset.profile.json" \
      2> "$work/time.txt" | tail -1
  rss=$(grep "Maximum resident" "$work/time.txt" | awk '{print $NF}')
  wall=$(grep "Elapsed (wall" "$work/time.txt" | awk '{print $NF}')
  echo "   peak RSS $((rss / 1024)) MiB, wall $wall"
done
