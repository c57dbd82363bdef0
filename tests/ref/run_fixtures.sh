#!/bin/sh
# CTest entry for the independent reference (tests/ref/ref.py, numpy only): every fixture in
# tests/fixtures/arch against transformers' logits (both config spellings, the KV-cache path where
# recorded), then the checkpoint-layout and bad-input checks. Exit 77 (CTest: skipped) when no
# python3 with numpy is at hand (Debian: python3-numpy, scripts/deps.sh test).
here=$(cd "$(dirname "$0")" && pwd)
for py in "${PYTHON:-}" python3 /usr/bin/python3; do
  [ -n "$py" ] || continue
  if "$py" -c 'import numpy' >/dev/null 2>&1; then
    "$py" "$here/ref.py" --check-fixtures "$here/../fixtures/arch" "$@" || exit 1
    exec "$py" "$here/test_ref_layouts.py"
  fi
done
echo "SKIP: no python3 with numpy (Debian: apt-get install python3-numpy)"
exit 77
