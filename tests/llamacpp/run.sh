#!/usr/bin/env bash
# llama.cpp as the judge of ramfit's GGUF output (run by .ci/run after `make check`; needs the
# ramfit build in build/, npm/git/cmake/c++ for llama.cpp, python3, and ../shared/models).
# For every shared model:
#   - ramfit's unquantized GGUF (F32 for F32 checkpoints, else BF16) and one GGUF per uniform type
#     load in llama.cpp and generate (greedy, through llama.cpp's own sampling-free decode);
#   - llama.cpp tokenizes an evaluation text exactly as ramfit does;
#   - llama.cpp's perplexity of the unquantized GGUF equals ramfit's on the checkpoint (0.1%);
#   - llama-quantize --pure on the unquantized GGUF writes the same tensor bytes as ramfit's own
#     encoders for each type;
#   - a ramfit plan, written as llama-quantize's --tensor-type-file, gives with llama-quantize
#     the file ramfit writes for the same plan (types, bytes, size);
#   - a GGUF plan (analyse --format gguf) at the Q4_K file's size: quantize --budget fits it and
#     writes the plan's file, which llama-quantize reproduces from the plan's types and llama.cpp runs;
#   - both engines' perplexity on the same file within 0.1% (llama.cpp rounds the activations to
#     8 bits for its integer dot products, ramfit computes in float: the token count below keeps
#     that noise under the bound).
# And ggml's own encoders reproduce tests/fixtures/kquant/ggml_vectors.txt on this host; the arch
# fixtures of the families without a shared model run in llama.cpp against transformers' logits;
# llama.cpp tokenizes the real Llama 2/3 and Qwen3 vocabularies as Hugging Face from ramfit's GGUF.
# Usage: tests/llamacpp/run.sh [MODEL ...]   (default: all four shared models)
set -euo pipefail
cd "$(dirname "$0")/../.."
RAMFIT=${RAMFIT:-build/ramfit}
SHARED=${RF_SHARED_DIR:-../shared}
TYPES=${TYPES:-"Q2_K Q3_K Q4_K Q5_K Q6_K Q8_0 Q4_0 Q5_0 IQ4_NL IQ4_XS"}
[ -x "$RAMFIT" ] || { echo "llamacpp: $RAMFIT not built (run make check first)" >&2; exit 1; }
bin=$(bash tests/llamacpp/build.sh build-llamacpp | tail -n 1)
H=build-llamacpp/harness
Q=$bin/llama-quantize
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# ---- ggml's encoders on this host give the committed vectors
build-llamacpp/ggml_vectors > "$work/vectors.txt"
if diff -q <(grep -v '^#' tests/fixtures/kquant/ggml_vectors.txt) <(grep -v '^#' "$work/vectors.txt") >/dev/null; then
  ok "ggml_vectors.txt reproduced by libggml-base"
else
  fail "libggml-base's encoders differ from tests/fixtures/kquant/ggml_vectors.txt"
fi

# relative difference of two numbers, in percent
reldiff() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.5f' % (abs(a - b) / b * 100))" "$1" "$2"; }
within() { python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" "$1" "$2"; }

# ramfit's engine on GGUF files (once it reads them)
ramfit_reads_gguf=0
"$RAMFIT" ppl --help 2>&1 | grep -qi gguf && ramfit_reads_gguf=1

models=("$@")
[ ${#models[@]} -gt 0 ] || models=(stories260k babyllama-tok105 qwen3-dense-mini qwen3-moe-mini)
for model in "${models[@]}"; do
  dir=$SHARED/models/$model
  [ -d "$dir" ] || { fail "$model: no $dir"; continue; }
  echo "== $model"
  case $model in
    qwen3*) text=$SHARED/evaltext/debprose-test.txt; prompt="The LORD said";;
    *) text=$SHARED/evaltext/tinystories-valid-a.txt; prompt="Once upon a time";;
  esac
  head -c 120000 "$text" > "$work/text.txt"
  if [ "$model" = babyllama-tok105 ]; then
    # this character-level vocabulary has no newline and no byte fallback: Hugging Face maps an
    # unknown character to <unk>, llama.cpp's SentencePiece tokenizer throws. Compare on text
    # made of its own characters.
    python3 - "$dir/tokenizer.json" "$work/text.txt" <<'EOF'
import json, sys
vocab = json.load(open(sys.argv[1]))["model"]["vocab"]
t = open(sys.argv[2], encoding="utf-8").read().replace("\n", " ")
open(sys.argv[2], "w", encoding="utf-8").write("".join(c for c in t if c in vocab or c == " "))
EOF
  fi
  unq=BF16
  python3 -c "import json,sys; sys.exit(0 if json.load(open('$dir/config.json')).get('torch_dtype') == 'float32' else 1)" && unq=F32
  "$RAMFIT" quantize "$dir" --type $unq -o "$work/$model.$unq.gguf" --quiet >/dev/null

  # tokenization
  "$RAMFIT" tokenize "$dir" --file "$work/text.txt" --ids --no-special > "$work/ids.ramfit"
  "$H" tokenize "$work/$model.$unq.gguf" "$work/text.txt" > "$work/ids.llama"
  same_ids() { cmp -s <(tr -s ' \n' '\n\n' < "$1" | sed '/^$/d') <(tr -s ' \n' '\n\n' < "$2" | sed '/^$/d'); }
  if same_ids "$work/ids.ramfit" "$work/ids.llama"; then
    ok "$model: llama.cpp tokenizes $(wc -w < "$work/ids.ramfit") tokens as ramfit"
  else
    fail "$model: llama.cpp's token ids differ from ramfit's"
  fi
  if [ "$ramfit_reads_gguf" = 1 ]; then
    # ramfit's tokenizer rebuilt from the GGUF's tokenizer.ggml.* keys
    "$RAMFIT" tokenize "$work/$model.$unq.gguf" --file "$work/text.txt" --ids --no-special > "$work/ids.ramfit-gguf"
    if same_ids "$work/ids.ramfit-gguf" "$work/ids.llama"; then ok "$model: ramfit's tokenizer read from the GGUF agrees too"
    else fail "$model: ramfit's tokenizer read from the GGUF differs from llama.cpp's"; fi
  fi

  # perplexity of the unquantized GGUF in llama.cpp vs ramfit on the checkpoint (same protocol)
  # enough tokens for a 0.1% bound: on the 64- and 128-wide llama models llama.cpp's 8-bit
  # activations move the PPL of 2048 tokens by up to 0.12% (4096: 0.03%, 8192: 0.003% measured on
  # stories260k Q5_K); the 256-wide qwen models agree within 0.03% on 2048
  ctx=128; maxtok=2048
  case $model in stories260k|babyllama-tok105) maxtok=8192;; esac
  lp=$("$H" ppl "$work/$model.$unq.gguf" "$work/text.txt" $ctx full $maxtok | awk '{print $2}')
  rp=$("$RAMFIT" ppl "$dir" --file "$work/text.txt" --ctx $ctx --max-tokens $maxtok --json --quiet |
       python3 -c "import json,sys; print(json.load(sys.stdin)['ppl'])")
  d=$(reldiff "$lp" "$rp")
  if within "$d" 0.1; then ok "$model: PPL llama.cpp $lp (GGUF $unq) vs ramfit $rp (checkpoint): $d%"
  else fail "$model: PPL llama.cpp $lp (GGUF $unq) vs ramfit $rp (checkpoint): $d% > 0.1%"; fi

  for t in $unq $TYPES; do
    f=$work/$model.$t.gguf
    [ -f "$f" ] || "$RAMFIT" quantize "$dir" --type $t -o "$f" --quiet >/dev/null
    # loads and generates
    if gen=$("$H" generate "$f" "$prompt" 12 2>"$work/err") && [ "$(echo "$gen" | head -1 | wc -w)" -gt 1 ]; then
      ok "$model $t: generates: $(echo "$gen" | tail -n +2 | tr '\n' ' ' | cut -c1-80)"
    else
      fail "$model $t: llama.cpp does not load/generate: $(tail -2 "$work/err")"
    fi
    p=$("$H" ppl "$f" "$work/text.txt" $ctx full $maxtok | awk '{print $2}')
    if [ "$ramfit_reads_gguf" = 1 ]; then
      rq=$("$RAMFIT" ppl "$f" --file "$work/text.txt" --ctx $ctx --max-tokens $maxtok --json --quiet |
           python3 -c "import json,sys; print(json.load(sys.stdin)['ppl'])")
      d=$(reldiff "$rq" "$p")
      if within "$d" 0.1; then ok "$model $t: PPL ramfit $rq vs llama.cpp $p on the same file: $d%"
      else fail "$model $t: PPL ramfit $rq vs llama.cpp $p on the same file: $d% > 0.1%"; fi
    else
      ok "$model $t: llama.cpp PPL $p ($maxtok tokens)"
    fi
    [ $t = $unq ] && continue
    # llama-quantize's encoders on the same floats: identical tensors
    "$Q" --pure "$work/$model.$unq.gguf" "$work/lq.gguf" $t 2 >"$work/lq.log" 2>&1 || { fail "$model $t: llama-quantize failed"; continue; }
    if python3 tests/llamacpp/gguf_cmp.py "$f" "$work/lq.gguf" --quiet > "$work/cmp.txt"; then
      ok "$model $t: llama-quantize --pure writes the same tensors, bit for bit"
    else
      fail "$model $t: llama-quantize differs: $(head -3 "$work/cmp.txt" | tr '\n' ';')"
    fi
  done

  # a plan through llama-quantize's --tensor-type-file
  "$RAMFIT" analyse "$dir" --mode mlx -o "$work/$model.profile.json" --quiet >/dev/null
  # a budget halfway between min-safe and unquantized: a mix of types and kept units
  budget=$("$RAMFIT" plan "$work/$model.profile.json" --budget 1TB --json |
           python3 -c "import json,sys; d=json.load(sys.stdin); print((d['min_safe'] + d['profile']['full_bytes']) // 2)")
  "$RAMFIT" plan "$work/$model.profile.json" --budget "$budget" -o "$work/$model.plan.json" >/dev/null
  "$RAMFIT" plan "$work/$model.profile.json" --budget "$budget" --emit llama-quantize -o "$work/$model.types.txt" >/dev/null
  "$RAMFIT" quantize "$dir" --format gguf --plan "$work/$model.plan.json" -o "$work/$model.plan.gguf" --quiet >/dev/null
  # llama-quantize from ramfit's unquantized GGUF: kept units become BF16 from the same floats
  "$Q" --tensor-type-file "$work/$model.types.txt" "$work/$model.$unq.gguf" "$work/$model.lqplan.gguf" Q8_0 2 >"$work/lq.log" 2>&1 ||
    fail "$model: llama-quantize --tensor-type-file failed: $(tail -2 "$work/lq.log")"
  if python3 tests/llamacpp/gguf_cmp.py "$work/$model.plan.gguf" "$work/$model.lqplan.gguf" --quiet > "$work/cmp.txt"; then
    a=$(stat -c %s "$work/$model.plan.gguf"); b=$(stat -c %s "$work/$model.lqplan.gguf")
    ok "$model: plan ($(wc -l < "$work/$model.types.txt") tensor types) applied by llama-quantize = ramfit's GGUF, bit for bit; files $a and $b bytes"
  else
    fail "$model: llama-quantize with ramfit's tensor types differs: $(head -3 "$work/cmp.txt" | tr '\n' ';')"
  fi

  # planning over GGUF types (ramfit analyse --format gguf): at the uniform Q4_K file's size, the
  # one-shot file fits the budget, equals the plan's file, llama-quantize with the plan's types
  # writes it bit for bit, and llama.cpp runs it
  gbudget=$(stat -c %s "$work/$model.Q4_K.gguf")
  "$RAMFIT" analyse "$dir" --format gguf -o "$work/$model.gguf.profile.json" --quiet >/dev/null
  "$RAMFIT" plan "$work/$model.gguf.profile.json" --budget "$gbudget" -o "$work/$model.gplan.json" >/dev/null
  "$RAMFIT" plan "$work/$model.gguf.profile.json" --budget "$gbudget" --emit llama-quantize -o "$work/$model.gtypes.txt" >/dev/null
  "$RAMFIT" quantize "$dir" --format gguf --plan "$work/$model.gplan.json" -o "$work/$model.gplan.gguf" --quiet >/dev/null
  "$RAMFIT" quantize "$dir" --format gguf --budget "$gbudget" --profile "$work/$model.gguf.profile.json" \
      -o "$work/$model.gbudget.gguf" --quiet >/dev/null
  gsize=$(stat -c %s "$work/$model.gbudget.gguf")
  if [ "$gsize" -le "$gbudget" ] && cmp -s "$work/$model.gplan.gguf" "$work/$model.gbudget.gguf"; then
    ok "$model: quantize --budget $gbudget --format gguf: $gsize bytes, the plan's file"
  else
    fail "$model: quantize --budget $gbudget --format gguf wrote $gsize bytes, or not the plan's file"
  fi
  "$Q" --tensor-type-file "$work/$model.gtypes.txt" "$work/$model.$unq.gguf" "$work/$model.lqgplan.gguf" Q8_0 2 >"$work/lq.log" 2>&1 ||
    fail "$model: llama-quantize --tensor-type-file (GGUF plan) failed: $(tail -2 "$work/lq.log")"
  if python3 tests/llamacpp/gguf_cmp.py "$work/$model.gplan.gguf" "$work/$model.lqgplan.gguf" --quiet > "$work/cmp.txt"; then
    ok "$model: GGUF plan ($(cut -d= -f2 "$work/$model.gtypes.txt" | sort | uniq -c | tr -s ' \n' ' ')) applied by llama-quantize = ramfit's file, bit for bit"
  else
    fail "$model: llama-quantize with a GGUF plan's types differs: $(head -3 "$work/cmp.txt" | tr '\n' ';')"
  fi
  if gen=$("$H" generate "$work/$model.gbudget.gguf" "$prompt" 12 2>"$work/err") && [ "$(echo "$gen" | head -1 | wc -w)" -gt 1 ]; then
    ok "$model: the GGUF plan's file generates in llama.cpp"
  else
    fail "$model: llama.cpp does not load/generate the GGUF plan's file: $(tail -2 "$work/err")"
  fi
done

# ---- families without a shared model: transformers' own logits (tests/fixtures/arch) against
# llama.cpp running ramfit's F32 GGUF of the fixture (stories260k's tokenizer: the vocabulary has
# the same 512 ids). mistral's fixture has a 16-token sliding window, which llama.cpp's llama does
# not apply: compared on the first 16 positions. (llama_ext's gelu MLP is refused by the writer:
# llama.cpp's llama always uses SiLU.)
if [ $# -eq 0 ]; then
  for fam in mistral mixtral qwen2 qwen3 qwen3_moe; do
    fx=$work/fx-$fam
    cp -r tests/fixtures/arch/$fam "$fx"
    cp models/stories260k/tokenizer.json models/stories260k/tokenizer_config.json models/stories260k/tokenizer.model "$fx"/
    if ! "$RAMFIT" quantize "$fx" --type F32 -o "$fx.gguf" --quiet >/dev/null 2>"$work/err"; then
      fail "$fam fixture: ramfit cannot write it: $(tail -1 "$work/err")"
      continue
    fi
    ids=$(python3 -c "import json,sys; print(' '.join(map(str, json.load(open(sys.argv[1]))['ids'][0])))" "$fx/ids.json")
    npos=48
    [ $fam = mistral ] && npos=16
    "$H" logits-ids "$fx.gguf" $ids > "$work/logits.txt" || { fail "$fam fixture: llama.cpp cannot run ramfit's GGUF"; continue; }
    if r=$(python3 tests/llamacpp/logits_cmp.py "$work/logits.txt" "$fx/logits.npy" $npos 0.01); then
      ok "$fam fixture: llama.cpp on ramfit's GGUF vs transformers: $r"
    else
      fail "$fam fixture: llama.cpp on ramfit's GGUF vs transformers: $r"
    fi
  done
fi

# ---- real vocabularies without a model (../shared/tokenizers): llama.cpp tokenizes with ramfit's
# tokenizer.ggml.* as Hugging Face does (the cases' ids)
if [ $# -eq 0 ] && [ -x build-llamacpp/vocab_gguf ]; then
  for tk in llama2 llama3 qwen3; do
    d=$SHARED/tokenizers/$tk
    [ -d "$d" ] || { fail "tokenizer $tk: no $d"; continue; }
    build-llamacpp/vocab_gguf "$d" "$work/voc-$tk.gguf" >/dev/null 2>"$work/err" || { fail "tokenizer $tk: $(tail -1 "$work/err")"; continue; }
    if r=$(python3 tests/llamacpp/cases_cmp.py "$d/cases.jsonl" "$work/voc-$tk.gguf" "$H"); then ok "tokenizer $tk: $r"
    else fail "tokenizer $tk: $r"; fi
  done
fi

echo "== llama.cpp judge: $fails failure(s)"
[ "$fails" = 0 ]
