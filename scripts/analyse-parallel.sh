#!/usr/bin/env bash
# Analyse one checkpoint on several machines with GNU parallel over ssh, then merge the parts into
# one profile: byte for byte what 'ramfit analyse' on one machine writes (docs/distributed.md).
#
#   scripts/analyse-parallel.sh [-S LOGINS | --sshloginfile FILE] [--return] N MODEL_DIR OUT_DIR
#                               [-- ANALYSE_OPTION...]
#
#   -S LOGINS        GNU parallel's ssh logins, comma-separated: 'host1,4/host2,user@host3' (N/ is
#                    the jobs per host; ':' is this machine). Default: this machine only.
#   --sshloginfile F the same, one per line
#   --return         the hosts do not share OUT_DIR: each part is written in a scratch directory on
#                    its host and copied back here (GNU parallel --return: needs rsync on both ends)
#   N                number of parts (part K of N runs as one job, K = 1..N); more parts than
#                    hosts balance better and restart less work after a failure
#
# Every host needs ramfit (RAMFIT names it, default: ramfit on PATH) and the checkpoint at the same
# MODEL_DIR path; each part reads only its own units' bytes, about 1/N of the model. With a shared
# OUT_DIR an interrupted part continues from its checkpoint when the script runs again (--resume).
# The result is OUT_DIR/NAME.profile.json (NAME: MODEL_DIR's name).
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
logins=() back=0
while [ $# -gt 0 ]; do
    case $1 in
    -S) [ $# -ge 2 ] || usage; logins+=(--sshlogin "$2"); shift 2 ;;
    --sshloginfile) [ $# -ge 2 ] || usage; logins+=(--sshloginfile "$2"); shift 2 ;;
    --return) back=1; shift ;;
    -h|--help) usage ;;
    *) break ;;
    esac
done
[ $# -ge 3 ] || usage
n=$1 model=$2 out=$3
shift 3
[ "${1:-}" = "--" ] && shift
case $n in ''|*[!0-9]*|0) echo "analyse-parallel: N must be a number >= 1 (got '$n')" >&2; exit 2 ;; esac
command -v parallel > /dev/null || { echo "analyse-parallel: GNU parallel is not installed (Debian: apt-get install parallel)" >&2; exit 1; }
ramfit=${RAMFIT:-ramfit}
model=$(cd "$model" && pwd)
name=$(basename "$model")
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ ${#logins[@]} -gt 0 ] || logins=(--sshlogin :)

# the remote command: words quoted for the remote shell
q() {
    local r="" a
    for a in "$@"; do r+="${r:+ }$(printf '%q' "$a")"; done
    printf '%s' "$r"
}
opts=$(q "$@")
if [ "$back" = 1 ]; then
    # run in a scratch directory on each host (--wd ...), copy the part back into OUT_DIR, clean up
    (cd "$out" && parallel "${logins[@]}" --wd ... --return "$name.part{}-of-$n.json" --return "$name.part{}-of-$n.bin" \
        --cleanup --halt now,fail=1 --tag --line-buffer \
        "$(q "$ramfit") analyse $(q "$model") --shard {}/$n --quiet -o $(q "$name").part{}-of-$n.json $opts" ::: $(seq 1 "$n"))
else
    parallel "${logins[@]}" --halt now,fail=1 --tag --line-buffer \
        "$(q "$ramfit") analyse $(q "$model") --shard {}/$n --resume --quiet -o $(q "$out/$name").part{}-of-$n.json $opts" \
        ::: $(seq 1 "$n")
fi
parts=()
for k in $(seq 1 "$n"); do parts+=("$out/$name.part$k-of-$n.json"); done
"$ramfit" profile merge "${parts[@]}" -o "$out/$name.profile.json" --force
