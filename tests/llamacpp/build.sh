#!/usr/bin/env bash
# Build the llama.cpp judge programs against the cached llama.cpp build (scripts/llamacpp.sh):
#   harness        tests/llamacpp/harness.c linked with libllama
#   ggml_vectors   tests/ref/ggml_vectors.c linked with libggml-base (test vectors of the k-quants)
#   vocab_gguf     tests/llamacpp/vocab_gguf.c linked with ramfit's library (build/libramfit.a)
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
# ramfit's static library from the default build (make check built it)
lib=${RAMFIT_BUILD:-build}/libramfit.a
if [ -f "$lib" ]; then
  $CC -O2 -Iinclude -Isrc tests/llamacpp/vocab_gguf.c "$lib" $(pkg-config --libs jansson libpcre2-8 libutf8proc) \
      -lpthread -lm -o "$out/vocab_gguf"
fi
echo "$bin"
