#!/bin/sh
# Quality evaluation of ramfit against its baselines: writes docs/quality.md and docs/quality-*.svg.
# Usage: bench/quality.sh [--quick] [--bin build/ramfit] [--models a,b] [--max-tokens N] ... (--help)
exec python3 "$(dirname "$0")/quality/quality.py" "$@"
