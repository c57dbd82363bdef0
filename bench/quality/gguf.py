#!/usr/bin/env python3
"""ramfit's GGUF against llama.cpp's presets at their exact file sizes: writes docs/quality-gguf.md.

For each shared model: ramfit's BF16 GGUF export; llama-quantize (llama.cpp's own quantizer, no
importance matrix) makes Q2_K, Q3_K_M, Q4_K_M, Q5_K_M and Q6_K from it; `ramfit quantize --budget
SIZE --format gguf` makes ramfit's file at each preset's exact size (SIZE = the preset file's bytes:
the budget counts the whole file); both are scored against the BF16 GGUF by llama.cpp
(llama-perplexity --kl-divergence) and by ramfit (ramfit kld --protocol llama.cpp) on the same
text. llama.cpp's tools come from scripts/llamacpp.sh (built once into ~/.cache/ramfit).

usage: bench/quality_gguf.sh [--models a,b] [--chunks N] [--ctx N] [--presets LIST] [--base BF16|source]
                             [--bin build/ramfit] [--out docs/quality-gguf.md] [--work DIR] [--keep]

--base source: the reference (and llama-quantize's input) is the GGUF in the checkpoint's own precision
(F32 for an F32 checkpoint, BF16 for a BF16 one) instead of BF16 for all. ramfit quantizes from the
checkpoint; a preset made from a BF16 rounding of an F32 checkpoint, scored against that same BF16
file, is favoured where the error is near BF16's own (Q8_0: docs/quality-gguf.md).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ALL_MODELS = ["stories260k", "babyllama-tok105", "qwen3-dense-mini", "qwen3-moe-mini"]
PRESETS = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, env=None):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if r.returncode:
        raise SystemExit("command failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stdout[-4000:]))
    return r.stdout


def llama_bin(root):
    out = run(["bash", os.path.join(root, "scripts", "llamacpp.sh")]).strip().splitlines()
    d = out[-1].strip()
    return d if os.path.isdir(d) else os.path.join(d, "bin")


def text_for(model, shared, work, nbytes):
    src = os.path.join(shared, "evaltext", "debprose-test.txt" if model.startswith("qwen3") else "tinystories-valid-a.txt")
    t = open(src, encoding="utf-8").read()[:nbytes]
    if model == "babyllama-tok105":
        # its character vocabulary has no newline and no byte fallback: llama.cpp's tokenizer
        # throws on an unknown character where Hugging Face's gives <unk>; keep its own characters
        vocab = json.load(open(os.path.join(shared, "models", model, "tokenizer.json")))["model"]["vocab"]
        t = "".join(c for c in t.replace("\n", " ") if c in vocab or c == " ")
    path = os.path.join(work, model + ".txt")
    open(path, "w", encoding="utf-8").write(t)
    return path, os.path.basename(src)


KLD_RE = re.compile(r"Mean\s+KLD:\s+([0-9.eE+-]+)\s+±\s+([0-9.eE+-]+)")
PPL_RE = re.compile(r"Mean\s+PPL\(Q\)\s*:\s*([0-9.eE+-]+)")
TOP_RE = re.compile(r"Same top p:\s+([0-9.]+)\s+±")


CHUNKS_RE = re.compile(r"computing over (\d+) chunks")
ROW_RE = re.compile(r"^\s*(\d+)\s+[0-9.]+ ±\s+[0-9.]+\s+[-0-9.]+ ±\s+[0-9.]+\s+([0-9.]+) ±\s+([0-9.]+)\s", re.M)


def llama_kld(lbin, env, model_file, text, base, a):
    """Mean KLD ± its error and the top-1 agreement. llama.cpp's logger now and then loses the
    summary at exit: the run is repeated, and at last the final chunk's running mean (the same
    number) is taken when every chunk's row was printed."""
    for attempt in range(4):
        out = run([os.path.join(lbin, "llama-perplexity"), "-m", model_file, "-f", text, "-c", str(a.ctx), "--chunks",
                   str(a.chunks), "-t", str(a.threads), "--kl-divergence-base", base, "--kl-divergence"], env)
        m = KLD_RE.search(out)
        top = TOP_RE.search(out)
        if m:
            return float(m.group(1)), float(m.group(2)), float(top.group(1)) / 100 if top else float("nan")
    rows = ROW_RE.findall(out)
    n = CHUNKS_RE.search(out)
    if rows and n and int(rows[-1][0]) == int(n.group(1)):
        return float(rows[-1][1]), float(rows[-1][2]), float("nan")
    raise SystemExit("no KLD in llama-perplexity's output for %s:\n%s" % (model_file, out[-3000:]))


def base_type(mdir):
    """The checkpoint's own precision: F32 when config.json says float32, else BF16."""
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    return "F32" if (cfg.get("torch_dtype") or cfg.get("dtype")) == "float32" else "BF16"


def ramfit_kld(a, base, quant, text):
    out = run([a.bin, "kld", base, quant, "--file", text, "--protocol", "llama.cpp", "--ctx", str(a.ctx), "--max-tokens",
               str(a.ctx * a.chunks), "--threads", str(a.threads), "--json", "--quiet"])
    j = json.loads(out[out.index("{"):])
    return j["kld_mean"], j["kld_stderr"]


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(ALL_MODELS))
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=32, help="windows of --ctx tokens scored (default 32)")
    ap.add_argument("--text-bytes", type=int, default=60000, help="bytes of the evaluation text read")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(root, "build", "ramfit"))
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(root), "shared"))
    ap.add_argument("--out", default=os.path.join(root, "docs", "quality-gguf.md"))
    ap.add_argument("--work", default="")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--base", choices=("BF16", "source"), default="BF16",
                    help="reference GGUF: BF16, or the checkpoint's own precision (F32 or BF16)")
    a = ap.parse_args()
    lbin = llama_bin(root)
    env = dict(os.environ, LD_LIBRARY_PATH=lbin + ":" + os.environ.get("LD_LIBRARY_PATH", ""))
    work = a.work or tempfile.mkdtemp(prefix="ramfit-qgguf-")
    os.makedirs(work, exist_ok=True)
    results = []
    try:
        for model in a.models.split(","):
            mdir = os.path.join(a.shared, "models", model)
            text, tname = text_for(model, a.shared, work, a.text_bytes)
            btype = base_type(mdir) if a.base == "source" else "BF16"
            bf16 = os.path.join(work, "%s.%s.gguf" % (model, btype))
            run([a.bin, "quantize", mdir, "--type", btype, "-o", bf16, "--force", "--quiet"])
            base = os.path.join(work, model + ".base.kld")
            run([os.path.join(lbin, "llama-perplexity"), "-m", bf16, "-f", text, "-c", str(a.ctx), "--chunks", str(a.chunks),
                 "-t", str(a.threads), "--kl-divergence-base", base], env)
            prof = os.path.join(work, model + ".gguf.profile.json")
            t0 = time.time()
            run([a.bin, "analyse", mdir, "--format", "gguf", "-o", prof, "--threads", str(a.threads), "--quiet"])
            t_an = time.time() - t0
            for preset in a.presets.split(","):
                pf = os.path.join(work, "%s.%s.gguf" % (model, preset))
                run([os.path.join(lbin, "llama-quantize"), bf16, pf, preset, str(a.threads)], env)
                size = os.path.getsize(pf)
                rf = os.path.join(work, "%s.ramfit-%s.gguf" % (model, preset))
                run([a.bin, "quantize", mdir, "--budget", str(size), "--format", "gguf", "--profile", prof, "-o", rf,
                     "--force", "--quiet"])
                row = {"model": model, "text": tname, "base": btype, "preset": preset, "size": size, "ramfit_size": os.path.getsize(rf),
                       "analyse_s": t_an}
                for who, f in (("preset", pf), ("ramfit", rf)):
                    row[who + "_llama"] = llama_kld(lbin, env, f, text, base, a)
                    row[who + "_rf"] = ramfit_kld(a, bf16, f, text)
                log("%s %s: %d B (ramfit %d B): KLD llama.cpp %.6f vs ramfit %.6f; ramfit's kld %.6f vs %.6f" % (
                    model, preset, size, row["ramfit_size"], row["preset_llama"][0], row["ramfit_llama"][0],
                    row["preset_rf"][0], row["ramfit_rf"][0]))
                results.append(row)
                os.remove(pf)
                os.remove(rf)
    finally:
        if not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)
    write_report(a, results)


def write_report(a, results):
    cmd = "bench/quality_gguf.sh" + ("" if a.models == ",".join(ALL_MODELS) else " --models " + a.models)
    if a.base != "BF16":
        cmd += " --base %s --out %s" % (a.base, os.path.relpath(a.out))
    ref = "BF16"
    if a.base == "source":
        ref = "REF"
    L = ["# GGUF: ramfit against llama.cpp's presets at their exact file sizes" +
         (" (reference in the checkpoint's own precision)" if a.base == "source" else ""), "",
         "Made by `%s` (bench/quality/gguf.py; llama.cpp's tools from scripts/llamacpp.sh, node-llama-cpp 3.21.1's "
         "llama.cpp). For each shared model: ramfit's %s GGUF (`ramfit quantize MODEL --type %s`%s); "
         "`llama-quantize %s.gguf PRESET.gguf PRESET` (llama.cpp's own quantizer and type mixture, no importance "
         "matrix); `ramfit quantize MODEL --budget SIZE --format gguf` with SIZE the preset file's bytes (the budget "
         "counts the whole file, header, metadata and tokenizer included; data-free: `ramfit analyse --format gguf`, "
         "default row sampling, then the exact knapsack over each tensor's GGUF types). KLD(%s || file) per token, "
         "mean ± standard error, on the first %d windows of %d tokens of the text (llama.cpp's protocol: second half "
         "of each window scored), measured by llama.cpp (`llama-perplexity --kl-divergence-base %s logits "
         "--kl-divergence`) and by ramfit (`ramfit kld %s.gguf FILE --protocol llama.cpp`)." % (
             cmd, ref, "REF" if a.base == "source" else "BF16",
             ", REF = F32 for a checkpoint stored in float32, BF16 otherwise: column ref" if a.base == "source" else "",
             ref, ref, a.chunks, a.ctx, ref, ref),
         "", "| model | text |%s preset | file bytes | ramfit bytes | KLD preset (llama.cpp) | KLD ramfit (llama.cpp) "
         "| ratio | KLD preset (ramfit) | KLD ramfit (ramfit) | same verdict |" % (" ref |" if a.base == "source" else ""),
         "|---|---|%s---|---:|---:|---:|---:|---:|---:|---:|---|" % ("---|" if a.base == "source" else "")]
    wins = ties = 0
    for r in results:
        pl, rl, pr, rr = r["preset_llama"], r["ramfit_llama"], r["preset_rf"], r["ramfit_rf"]
        win = rl[0] < pl[0]
        wins += win
        ties += rl[0] == pl[0]
        same = (rr[0] < pr[0]) == win
        L.append("| %s | %s |%s %s | %d | %d | %.6f ± %.6f | %.6f ± %.6f | %.2f | %.6f ± %.6f | %.6f ± %.6f | %s |" % (
            r["model"], r["text"], " %s |" % r["base"] if a.base == "source" else "", r["preset"], r["size"], r["ramfit_size"], pl[0], pl[1], rl[0], rl[1],
            rl[0] / pl[0] if pl[0] > 0 else float("nan"), pr[0], pr[1], rr[0], rr[1], "yes" if same else "NO"))
    L += ["", "ramfit's file has the lower KLD (llama.cpp's measure) in %d of %d comparisons%s; ratio = ramfit's KLD / "
          "the preset's. Analysis time per model (`ramfit analyse --format gguf`, %d threads): %s." % (
              wins, len(results), ", the same KLD in %d" % ties if ties else "", a.threads,
              ", ".join("%s %.2f s" % (m, t) for m, t in dict((r["model"], r["analyse_s"]) for r in results).items()))]
    if a.base == "BF16":
        L += ["", "Where the checkpoint is stored in F32 (stories260k, babyllama-tok105), each preset is made from the BF16 "
              "reference itself while ramfit quantizes the F32 checkpoint: where both files have the same types (Q6_K: "
              "nearly all Q8_0 on these 64/128-wide rows), that favours the preset, whose Q8_0 grid partly coincides with "
              "BF16's. `bench/quality_gguf.sh --base source` (docs/quality-gguf-source.md) repeats the comparison "
              "against the checkpoint's own precision, presets made from that file."]
    L += [""]
    open(a.out, "w").write("\n".join(L))
    log("wrote " + a.out)


if __name__ == "__main__":
    main()
