#!/usr/bin/env bash
# The distributed-analysis scripts end to end on this machine: scripts/analyse-slurm.sh with a
# stand-in sbatch that runs each array task at once, and scripts/analyse-parallel.sh with a
# stand-in ssh (when GNU parallel is installed); both must give the single machine's profile,
# byte for byte. Usage: tests/scripts/test_distributed.sh BUILD_DIR (run by .ci/run).
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
export RAMFIT=$build/ramfit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=$tmp/model
"$RAMFIT" synth "$model" --like qwen3-30b-a3b --scale 0.0625 --layers 2 --experts 4 > /dev/null 2>&1
opts=(--mode both --opt-sample 64)
mkdir -p "$tmp/single"
"$RAMFIT" analyse "$model" "${opts[@]}" --quiet -o "$tmp/single/model.profile.json" > /dev/null
same() { # the index (naming its data file) and the data file of two profiles of the same name
    cmp "$tmp/single/model.profile.json" "$1/model.profile.json" && cmp "$tmp/single/model.profile.bin" "$1/model.profile.bin"
}

# --- Slurm: a stand-in sbatch runs the array's tasks, then the dependent merge, at once
mkdir -p "$tmp/bin"
cat > "$tmp/bin/sbatch" <<'SB'
#!/usr/bin/env bash
array="" script=()
while [ $# -gt 0 ]; do
    case $1 in
    --array=*) array=${1#--array=} ;;
    --*) ;; # --parsable, --job-name=..., --dependency=... and the caller's own options
    *) script=("$@"); break ;;
    esac
    shift
done
if [ -n "$array" ]; then
    for k in $(seq "${array%-*}" "${array#*-}"); do SLURM_ARRAY_TASK_ID=$k SLURM_CPUS_PER_TASK=2 "${script[@]}" > /dev/null; done
    echo 101
else
    "${script[@]}" > /dev/null
    echo 102
fi
SB
chmod +x "$tmp/bin/sbatch"
for n in 1 3; do
    PATH=$tmp/bin:$PATH "$root/scripts/analyse-slurm.sh" submit "$n" "$model" "$tmp/slurm$n" --partition=x -- "${opts[@]}" > /dev/null
    same "$tmp/slurm$n"
done
# a missing part is named; nothing is written
rm "$tmp/slurm3/model.part2-of-3.json" "$tmp/slurm3/model.profile.json"
if "$root/scripts/analyse-slurm.sh" merge 3 "$model" "$tmp/slurm3" 2> "$tmp/err"; then echo "merge without part 2 succeeded" >&2; exit 1; fi
grep -q "part 2 of 3 is missing" "$tmp/err"
[ ! -e "$tmp/slurm3/model.profile.json" ]
echo "analyse-slurm.sh: parts of 1 and 3 merged byte-identical"

# --- GNU parallel over a stand-in ssh (two "hosts")
if command -v parallel > /dev/null; then
    cat > "$tmp/bin/ssh" <<'SSH'
#!/usr/bin/env bash
while [ $# -gt 0 ]; do case $1 in -l|-p|-o) shift 2 ;; -*) shift ;; *) break ;; esac; done
shift
[ "${1:-}" = "--" ] && shift
# a real sshd gives the remote shell a login environment; GNU parallel's remote wrapper runs the
# job with $SHELL and silently runs nothing without it (CI's environment has no SHELL)
export SHELL=/bin/bash HOME=${HOME:-/tmp}
exec bash -c "$*"
SSH
    chmod +x "$tmp/bin/ssh"
    PARALLEL_SSH=$tmp/bin/ssh "$root/scripts/analyse-parallel.sh" -S 1/hostA,2/hostB 7 "$model" "$tmp/par" -- "${opts[@]}" > /dev/null
    same "$tmp/par"
    echo "analyse-parallel.sh: 7 parts on two ssh hosts merged byte-identical"
else
    echo "analyse-parallel.sh: skipped (GNU parallel not installed)"
fi
