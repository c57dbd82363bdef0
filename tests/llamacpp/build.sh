#!/usr/bin/env bash
# Build the llama.cpp judge programs against the cached llama.cpp build (scripts/llamacpp.sh):
#   harness        tests/llamacpp/harness.c linked with libllama
#   ggml_vectors   tests/ref/ggml_vectors.c linked with libggml-base (test vectors of the k-quants)
# Output directory: $1 (default build-llamacpp). Prints nothing but errors.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-build-llamacpp}
bin=$(bash scripts/llamacpp.sh llama-quantize llama-perplexity llama-tokenize llama | tail -n 1)
src=$(dirname "$bin")/../src
[ -d "$src" ] || src=$(dirname "$(dirname "$bin")")/src
mkdir -p "$out"
CC=${CC:-cc}
# -ffp-contract=off as ggml's own build: the vectors must be ggml's bytes on any host
$CC -O2 -ffp-contract=off -I"$src/ggml/include" -Itests/ref tests/ref/ggml_vectors.c \
    -L"$bin" -lggml-base -Wl,-rpath,"$bin" -o "$out/ggml_vectors"
$CC -O2 -I"$src/include" -I"$src/ggml/include" tests/llamacpp/harness.c \
    -L"$bin" -lllama -lggml -lggml-base -lm -Wl,-rpath,"$bin" -o "$out/harness"
echo "$bin"
