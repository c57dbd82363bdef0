#!/bin/sh
# ramfit's GGUF against llama.cpp's presets (Q2_K..Q6_K made by llama-quantize) at their exact
# file sizes, KLD measured by llama.cpp and by ramfit: writes docs/quality-gguf.md.
# Usage: bench/quality_gguf.sh [--models a,b] [--chunks N] [--presets LIST] ... (--help)
exec python3 "$(dirname "$0")/quality/gguf.py" "$@"
