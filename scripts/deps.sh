#!/bin/sh
# Make sure the Debian packages ramfit needs are installed. As root: installs what is missing.
# Otherwise: prints the exact apt-get line and fails.  Usage: scripts/deps.sh [build|test|fuzz|bench]
set -eu
want="pkg-config libjansson-dev libpcre2-dev libutf8proc-dev"
case "${1:-build}" in
  test) want="$want libcmocka-dev python3-numpy" ;;  # numpy: tests/ref/ref.py, the independent reference
  fuzz) want="$want libcmocka-dev clang libclang-rt-14-dev" ;;
  bench) want="$want libcmocka-dev libopenblas-dev" ;;
esac
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "ramfit: installing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "ramfit needs these Debian packages. Install them with:" >&2
  echo "  sudo apt-get install -y$missing" >&2
  exit 1
fi
