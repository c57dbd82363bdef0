#!/usr/bin/env bash
# Plans chosen from estimated and exact opt profiles, measured (docs/profile.md, "Estimated errors").
#
#   bench/estimate_kld.sh [--bin build/ramfit] [--models a,b] [--samples 4096,64] [--sizes 3:64,4:64,5:64]
#                         [--max-tokens 8192] [--threads 2] [--shared ../shared]
#
# Each model is analysed in opt mode exactly (--exact) and from samples (--opt-sample N for each N
# of --samples: the default 4096 and a small one, so that the shared models' units, most of which
# have at most 8 x 4096 groups and are measured exactly at the default, are estimated too). At
# the size of each uniform config of --sizes (the bytes of `ramfit plan --method uniform:B:G`), a
# plan is solved from every profile; each plan is quantized and its KLD against the unquantized
# model measured on the model's own text (`ramfit kld`, first --max-tokens tokens). Printed per
# size: the units whose config differs from the exact profile's plan, and the KLD with its
# standard error; a difference in KLD within 2 standard errors of the difference is noise (the
# two KLDs are measured on the same tokens, so this bound is conservative).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/build/ramfit
models=stories260k,babyllama-tok105,qwen3-dense-mini,qwen3-moe-mini
samples=4096,64
sizes=3:64,4:64,5:64
tokens=8192
threads=2
shared=$(cd "$root/.." && pwd)/shared
while [ $# -gt 0 ]; do
    case $1 in
    --bin) bin=$2; shift ;;
    --models) models=$2; shift ;;
    --samples) samples=$2; shift ;;
    --sizes) sizes=$2; shift ;;
    --max-tokens) tokens=$2; shift ;;
    --threads) threads=$2; shift ;;
    --shared) shared=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "estimate_kld.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
text_of() { case $1 in stories*|babyllama*) echo tinystories-valid-a.txt ;; qwen3*) echo debprose-test.txt ;; *) echo wiki.test.raw ;; esac; }
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }
# units whose (bits, gs) differ between two plan files
differ() {
    python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ua = {u["name"]: (u["bits"], u["gs"]) for u in a["units"]}
print(sum(1 for u in b["units"] if ua.get(u["name"]) != (u["bits"], u["gs"])))
PY
}
printf '%-17s %-10s %-9s %10s %7s %9s %11s %10s  %s\n' model size profile bytes changed "units est" KLD stderr "vs exact"
IFS=, read -ra ms <<< "$models"
IFS=, read -ra ss <<< "$samples"
IFS=, read -ra zs <<< "$sizes"
for m in "${ms[@]}"; do
    dir=$shared/models/$m
    text=$shared/evaltext/$(text_of "$m")
    profiles=(exact)
    "$bin" analyse "$dir" --mode mlx --quiet --threads "$threads" -o "$tmp/$m-mlx.json" > /dev/null  # the uniform sizes
    "$bin" analyse "$dir" --mode opt --exact --quiet --json --threads "$threads" -o "$tmp/$m-exact.json" > "$tmp/$m-exact.out"
    for s in "${ss[@]}"; do
        "$bin" analyse "$dir" --mode opt --opt-sample "$s" --quiet --json --threads "$threads" -o "$tmp/$m-s$s.json" > "$tmp/$m-s$s.out"
        profiles+=("s$s")
    done
    for z in "${zs[@]}"; do
        "$bin" plan "$tmp/$m-mlx.json" --method "uniform:$z" --json -o "$tmp/u.json" > "$tmp/u.out"
        budget=$(field 'd["plans"][0]["total_bytes"]' < "$tmp/u.out")
        kexact="" sexact=""
        for p in "${profiles[@]}"; do
            plan=$tmp/$m-$z-$p.plan.json
            "$bin" plan "$tmp/$m-$p.json" --budget "$budget" --mode opt --unsafe --json -o "$plan" > "$tmp/p.out"
            bytes=$(field 'd["plans"][0]["total_bytes"]' < "$tmp/p.out")
            est=$(field 'd["estimated_units"]' < "$tmp/$m-$p.out")
            changed=$(differ "$tmp/$m-$z-exact.plan.json" "$plan")
            rm -rf "$tmp/q"
            "$bin" quantize "$dir" --plan "$plan" -o "$tmp/q" --quiet --threads "$threads" > /dev/null
            "$bin" kld "$dir" "$tmp/q" --file "$text" --max-tokens "$tokens" --json --quiet --threads "$threads" > "$tmp/k.out"
            kld=$(field 'd["kld_mean"]' < "$tmp/k.out")
            se=$(field 'd["kld_stderr"]' < "$tmp/k.out")
            verdict=-
            if [ "$p" = exact ]; then
                kexact=$kld sexact=$se
            else
                verdict=$(python3 -c 'import sys, math; a, sa, b, sb = map(float, sys.argv[1:5]); d = a - b
print("%+.2f%% (%s)" % (100 * d / b, "same plan" if sys.argv[5] == "0" else "within noise" if abs(d) <= 2 * math.hypot(sa, sb) else "BEYOND NOISE"))' \
                    "$kld" "$se" "$kexact" "$sexact" "$changed")
            fi
            printf '%-17s %-10s %-9s %10d %7d %9s %11.6f %10.2e  %s\n' "$m" "uniform $z" "$p" "$bytes" "$changed" "$est" "$kld" "$se" "$verdict"
        done
    done
done
