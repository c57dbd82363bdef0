#!/bin/sh
# Analyse one checkpoint on N machines as a Slurm job array, then merge the parts into one
# profile: byte for byte what 'ramfit analyse' on one machine writes (docs/distributed.md).
#
#   scripts/analyse-slurm.sh submit N MODEL_DIR OUT_DIR [SBATCH_OPTION...] [-- ANALYSE_OPTION...]
#       submits an array of N tasks (part K of N each) and a merge job that runs when all succeed;
#       prints both job ids. OUT_DIR/NAME.profile.json is the result (NAME: MODEL_DIR's name).
#   scripts/analyse-slurm.sh task N MODEL_DIR OUT_DIR [-- ANALYSE_OPTION...]
#       one part, K from SLURM_ARRAY_TASK_ID (what each array task runs; resumes an interrupted
#       or requeued part from its checkpoint).
#   scripts/analyse-slurm.sh merge N MODEL_DIR OUT_DIR
#       the merge alone (e.g. after resubmitting failed tasks with --array=K).
#
# MODEL_DIR and OUT_DIR must be on a filesystem every node sees at the same path. RAMFIT names
# the ramfit binary (default: ramfit on PATH). Threads per task: SLURM_CPUS_PER_TASK (give
# sbatch --cpus-per-task); each part reads only its own units' bytes, about 1/N of the model.
set -eu

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 4 ] || usage
cmd=$1 n=$2 model=$3 out=$4
shift 4
case $n in ''|*[!0-9]*) echo "analyse-slurm: N must be a number (got '$n')" >&2; exit 2 ;; esac
[ "$n" -ge 1 ] || { echo "analyse-slurm: N must be at least 1" >&2; exit 2; }
ramfit=${RAMFIT:-ramfit}
name=$(basename "$(cd "$model" && pwd)")
part() { echo "$out/$name.part$1-of-$n.json"; }

case $cmd in
submit)
    sb=""
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do sb="$sb $1"; shift; done
    [ $# -gt 0 ] && shift # the '--'
    mkdir -p "$out"
    self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
    # shellcheck disable=SC2086 # sbatch options are words on purpose
    array=$(sbatch --parsable --job-name="ramfit-analyse-$name" --array="1-$n" --output="$out/slurm-%A_%a.out" $sb \
        "$self" task "$n" "$model" "$out" -- "$@")
    merge=$(sbatch --parsable --job-name="ramfit-merge-$name" --dependency="afterok:${array%%;*}" --kill-on-invalid-dep=yes \
        --output="$out/slurm-merge-%j.out" --ntasks=1 --cpus-per-task=1 "$self" merge "$n" "$model" "$out")
    echo "analysis array job $array ($n parts), merge job $merge: $out/$name.profile.json"
    ;;
task)
    [ "${1:-}" = "--" ] && shift
    k=${SLURM_ARRAY_TASK_ID:?"analyse-slurm: task runs inside a Slurm array job (SLURM_ARRAY_TASK_ID unset)"}
    mkdir -p "$out"
    if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then set -- --threads "$SLURM_CPUS_PER_TASK" "$@"; fi
    exec "$ramfit" analyse "$model" --shard "$k/$n" --resume --quiet -o "$(part "$k")" "$@"
    ;;
merge)
    k=1
    while [ "$k" -le "$n" ]; do
        [ -f "$(part "$k")" ] || { echo "analyse-slurm: part $k of $n is missing: $(part "$k")" >&2; exit 1; }
        k=$((k + 1))
    done
    # the part names have no spaces or globs beyond OUT_DIR's own: list them one by one
    set --
    k=1
    while [ "$k" -le "$n" ]; do set -- "$@" "$(part "$k")"; k=$((k + 1)); done
    exec "$ramfit" profile merge "$@" -o "$out/$name.profile.json" --force
    ;;
*) usage ;;
esac
