#!/usr/bin/env bash
# llama.cpp's own tools, for ramfit's tests and benchmarks only (ramfit never runs or downloads
# llama.cpp itself). Debian 12 has no llama.cpp package; npm's node-llama-cpp@3.21.1 carries a git
# bundle of llama.cpp's full source (llama/gitRelease.bundle), which this script installs, checks
# out and builds with cmake. Everything lives in a cache outside the clone, so CI and later runs
# reuse it:
#   RAMFIT_LLAMACPP_CACHE (default ~/.cache/ramfit/llama.cpp-3.21.1)
# Usage: scripts/llamacpp.sh [TARGET...]   (default: the tools the tests and benches use)
# The last line printed is the directory of the built binaries (llama-quantize, llama-perplexity,
# llama-tokenize, llama-bench, ...) and of libllama.so; the source is in $CACHE/src.
# Needs: npm (Node.js), git, cmake, a C/C++ compiler. As root it installs missing Debian packages.
set -euo pipefail
VERSION=3.21.1
CACHE=${RAMFIT_LLAMACPP_CACHE:-$HOME/.cache/ramfit/llama.cpp-$VERSION}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(llama-quantize llama-perplexity llama-tokenize llama-bench llama-completion llama-simple llama-gguf llama)

need=""
for c in npm git cmake g++; do command -v $c >/dev/null 2>&1 || need="$need $c"; done
if [ -n "$need" ]; then
  pkgs=$(echo "$need" | sed 's/npm/npm/; s/g++/g++/')
  if [ "$(id -u)" = 0 ]; then
    echo "llamacpp.sh: installing Debian packages:$pkgs" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  else
    echo "llamacpp.sh needs:$pkgs. Install with: sudo apt-get install -y$pkgs" >&2
    exit 1
  fi
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # one build at a time: CI steps and parallel users share the cache

bundle="$CACHE/npm/node_modules/node-llama-cpp/llama/gitRelease.bundle"
if [ ! -f "$bundle" ]; then
  echo "llamacpp.sh: npm install node-llama-cpp@$VERSION (source bundle only) into $CACHE/npm" >&2
  mkdir -p "$CACHE/npm"
  # --omit=optional: the package's optional dependencies are ~700 MB of prebuilt GPU binaries;
  # --ignore-scripts: its postinstall would try to fetch or build its own copy.
  (cd "$CACHE/npm" && npm install --no-audit --no-fund --omit=optional --ignore-scripts \
      --prefix "$CACHE/npm" "node-llama-cpp@$VERSION" >&2)
fi
if [ ! -d "$CACHE/src/.git" ]; then
  rm -rf "$CACHE/src.tmp"
  git clone -q "$bundle" "$CACHE/src.tmp" >&2
  mv "$CACHE/src.tmp" "$CACHE/src"
fi
# Native CPU flags (llama.cpp's default): the speed comparison in bench/ is against llama.cpp at
# its best on this machine. The reference quantizers ramfit matches are scalar C either way.
# Less AMX: on this project's Xeon machines (Sapphire Rapids class, AMX-INT8) llama.cpp 3.21.1's
# AMX matmul (ggml_backend_amx_mul_mat) segfaults on the first Q4_K model it runs, so every test
# and bench against llama.cpp would die; -mno-amx-* leaves __AMX_INT8__ undefined and ggml builds
# without that backend (its AVX-512 VNNI kernels do the work). A no-op on CPUs without AMX.
noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if ! grep -q -- "-mno-amx-int8" "$CACHE/build/CMakeCache.txt" 2>/dev/null; then
  cmake -S "$CACHE/src" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=ON >&2
fi
cmake --build "$CACHE/build" -j "$JOBS" --target "${targets[@]}" >&2
echo "$CACHE/build/bin"
