#!/usr/bin/env bash
# ramfit's engine next to llama.cpp on the same machine, in one run: prompt (pp) and decode (tg)
# tokens per second of synthetic models of real shapes, llama-bench on a Q4_K_M GGUF against
# ramfit on its own MLX output of the same size, rounds alternating between the two engines so
# that other users' load hits both alike; the medians and their ratio are printed.
#
# usage: bench/llamacpp_side.sh [--shapes LIST] [--rounds R] [--threads N] [-p P] [-n N]
#                               [--work DIR] [--gguf] [--kld] [--keep]
#   --shapes LIST  comma-separated synth presets, each optionally :LAYERS (default
#                  qwen3-1.7b,qwen3-8b,qwen3-30b-a3b:8)
#   --rounds R     alternating rounds per shape (default 5); each round is one llama-bench run
#                  (warm-up + 1 repetition) and one bench_model run (warm-up + 1) per ramfit mode
#   --work DIR     where models are made and kept between runs (default ~/.cache/ramfit/side)
#   --prepare      only make the models (synth, GGUF, Q4_K_M, MLX), no measurement
#   --gguf         also ramfit on the very Q4_K_M file llama-bench reads (fast mode; the exact
#                  mode decodes each weight row to float and is several times slower)
#   --kld          also score ramfit's fast mode against its exact mode (KLD on 8192 tokens of
#                  ../shared/evaltext/wiki.test.raw)
#
# Models: `ramfit synth --like PRESET --vocab 4096` with the byte-level BPE tokenizer of the
# qwen3-dense-mini test model; GGUF: bench/hf_to_gguf.py (BF16, needs python3-numpy and
# python3-yaml and llama.cpp's gguf-py) then llama-quantize Q4_K_M; MLX: `ramfit quantize
# --budget` the Q4_K_M file's size (so both engines read the same number of bytes per token).
# llama.cpp's tools come from scripts/llamacpp.sh (built once into ~/.cache/ramfit).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shapes="qwen3-1.7b,qwen3-8b,qwen3-30b-a3b:8"
rounds=5; threads=2; P=128; N=32; kld=0; prepare=0; gg=0
work=${RAMFIT_SIDE_WORK:-$HOME/.cache/ramfit/side}
while [ $# -gt 0 ]; do
  case "$1" in
    --shapes) shapes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -p) P=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --kld) kld=1; shift ;;
    --gguf) gg=1; shift ;;
    --prepare) prepare=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "llamacpp_side.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

build=${RAMFIT_BUILD:-$here/build}
if [ ! -x "$build/ramfit" ] || [ ! -x "$build/bench/bench_model" ]; then
  cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j 2 --target ramfit_cli bench_model >/dev/null
fi
ramfit=$build/ramfit
bench_model=$build/bench/bench_model
bin=$("$here/scripts/llamacpp.sh" llama-bench llama-quantize | tail -1)
gguf_py=$(dirname "$bin")/../src/gguf-py
[ -d "$gguf_py" ] || gguf_py=${RAMFIT_LLAMACPP_CACHE:-$HOME/.cache/ramfit/llama.cpp-3.21.1}/src/gguf-py
tokdir=$here/../shared/models/qwen3-dense-mini
[ -f "$tokdir/tokenizer.json" ] || { echo "llamacpp_side.sh: needs $tokdir/tokenizer.json" >&2; exit 1; }
mkdir -p "$work"

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
range() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.1f-%.1f", lo, hi}'; }

make_models() { # preset layers -> sets dir, gguf, mlx
  local preset=$1 layers=$2 tag=$1${2:+-l$2}
  dir=$work/$tag-bf16; gguf=$work/$tag-q4km.gguf; mlx=$work/$tag-mlx
  # the BF16 checkpoint is only needed to make the other two (it is deleted by nothing, but a
  # work directory copied without it is still usable)
  if [ ! -f "$dir/config.json" ] && { [ ! -f "$gguf" ] || [ ! -f "$mlx/config.json" ]; }; then
    echo "making $dir" >&2
    nice "$ramfit" synth "$dir.tmp" --like "$preset" --vocab 4096 ${layers:+--layers $layers} --threads 2 --quiet --force
    cp "$tokdir/tokenizer.json" "$tokdir/tokenizer_config.json" "$dir.tmp/"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  if [ ! -f "$gguf" ]; then
    echo "making $gguf" >&2
    PYTHONPATH=$gguf_py nice /usr/bin/python3 "$here/bench/hf_to_gguf.py" "$dir" "$work/$tag-bf16.gguf"
    nice "$bin/llama-quantize" "$work/$tag-bf16.gguf" "$gguf.tmp" Q4_K_M 2 >/dev/null 2>&1
    mv "$gguf.tmp" "$gguf"; rm -f "$work/$tag-bf16.gguf"
  fi
  if [ ! -f "$mlx/config.json" ]; then
    echo "making $mlx" >&2
    local bytes; bytes=$(stat -c %s "$gguf")
    nice "$ramfit" analyse "$dir" --mode mlx --threads 2 --quiet -o "$work/$tag.profile.json"
    nice "$ramfit" quantize "$dir" --budget "$bytes" --profile "$work/$tag.profile.json" -o "$mlx" --threads 2 --quiet --force
  fi
}

printf 'llamacpp_side: %s, %d threads, %d rounds, pp%d / tg%d, cpu: %s\n' "$(date -u +%F\ %H:%MZ)" "$threads" "$rounds" \
  "$P" "$N" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
IFS=, read -ra list <<<"$shapes"
for item in "${list[@]}"; do
  preset=${item%%:*}; layers=""; [ "$item" != "$preset" ] && layers=${item#*:}
  make_models "$preset" "$layers"
  [ "$prepare" = 1 ] && continue
  out=$work/side.$$; : >"$out"
  load0=$(cut -d' ' -f1 /proc/loadavg)
  for r in $(seq 1 "$rounds"); do
    "$bin/llama-bench" -m "$gguf" -p "$P" -n "$N" -t "$threads" -r 1 -o csv 2>/dev/null |
      awk -F, -v P="$P" -v N="$N" 'NR==1 {for (i=1;i<=NF;i++) {gsub(/"/,"",$i); c[$i]=i}; next}
           {gsub(/"/,""); if ($c["n_prompt"]==P && $c["n_gen"]==0) print "llama pp", $c["avg_ts"];
            else if ($c["n_gen"]==N && $c["n_prompt"]==0) print "llama tg", $c["avg_ts"]}' >>"$out"
    "$bench_model" "$mlx" --threads "$threads" -p "$P" -n "$N" -r 1 --mode both |
      awk -v P="$P" -v N="$N" '{sub("pp" P, "pp"); sub("tg" N, "tg"); print}' >>"$out"
    if [ "$gg" = 1 ]; then
      "$bench_model" "$gguf" --threads "$threads" -p "$P" -n "$N" -r 1 --mode fast |
        awk -v P="$P" -v N="$N" '{sub("pp" P, "pp"); sub("tg" N, "tg"); print "g" $0}' >>"$out"
    fi
  done
  load1=$(cut -d' ' -f1 /proc/loadavg)
  gb=$(stat -c %s "$gguf"); mb=$(du -b --apparent-size -c "$mlx"/*.safetensors | tail -1 | cut -f1)
  echo
  echo "== $preset${layers:+ ($layers layers)}, vocab 4096: median of $rounds rounds (range), load average $load0 -> $load1"
  printf '%-24s %9s %17s %17s %8s %8s\n' "engine" "MB" "pp$P tok/s" "tg$N tok/s" "pp x" "tg x"
  lp=$(awk '$1=="llama" && $2=="pp" {print $3}' "$out" | median)
  lt=$(awk '$1=="llama" && $2=="tg" {print $3}' "$out" | median)
  engines="llama fast exact"; [ "$gg" = 1 ] && engines="$engines gfast"
  for e in $engines; do
    p=$(awk -v e=$e '$1==e && $2=="pp" {print $3}' "$out" | median)
    t=$(awk -v e=$e '$1==e && $2=="tg" {print $3}' "$out" | median)
    pr=$(awk -v e=$e '$1==e && $2=="pp" {print $3}' "$out" | range)
    tr=$(awk -v e=$e '$1==e && $2=="tg" {print $3}' "$out" | range)
    case $e in
      llama) label="llama.cpp Q4_K_M"; bytes=$gb ;;
      fast) label="ramfit MLX fast"; bytes=$mb ;;
      exact) label="ramfit MLX exact"; bytes=$mb ;;
      gfast) label="ramfit Q4_K_M fast"; bytes=$gb ;;
    esac
    awk -v l="$label" -v b="$bytes" -v p="$p" -v pr="($pr)" -v t="$t" -v tr="($tr)" -v lp="$lp" -v lt="$lt" \
      'BEGIN {printf "%-24s %9.0f %7.1f %-9s %7.1f %-9s %7.2fx %7.2fx\n", l, b / 1e6, p, pr, t, tr, p / lp, t / lt}'

  done
  if [ "$kld" = 1 ]; then
    k=$("$bench_model" "$mlx" --threads "$threads" -p 0 -n 0 --mode none --kld "$here/../shared/evaltext/wiki.test.raw" \
        --kld-tokens 8192 --ctx 256)
    echo "$k" | awk '{printf "fast vs exact on %d tokens of wiki.test.raw: KLD %.6f (p99 %.6f), top-1 agreement %.4f, PPL exact %.3f, fast %.3f\n", $7, $2, $3, $4, $5, $6}'
  fi
  rm -f "$out"
done
