#!/usr/bin/env python3
"""bench/quality: reproducible quality evaluation of ramfit against its baselines.

For each model and evaluation text: ramfit (opt and mlx quantizer) and the baselines (uniform MLX
quantization at every bits/gs, mlx-lm's mixed_X_Y recipes, llama.cpp-style _K_M presets, RAM/MINT) are
planned, quantized and measured with the built-in engine (perplexity and KL-divergence against the
unquantized model). ramfit and RAM are solved at the size of every rule baseline, so every baseline has a
matched-size comparison. With a calibration text (the second half of each model's first text, disjoint from
every evaluated token), the calibrated methods too: GPTQ on every uniform baseline (what a GPTQ user gets), ramfit
with activation-weighted errors (analyse --stats) and ramfit + GPTQ, at the same sizes. Per-unit ground-truth damage (one unit quantized at a time) checks and
calibrates the planner's data-free weights. Writes docs/quality.md and docs/quality-*.svg.

Run through bench/quality.sh; --help lists the options."""
import argparse
import json
import math
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Cli, llama_preset, load_json, load_profile, save_json, svg_panels, write_plan  # noqa: E402
from evaluate import Evaluator  # noqa: E402
import damage  # noqa: E402
import oracle  # noqa: E402
import report  # noqa: E402

TEXTS = {  # the texts each model is evaluated on (its own domain first)
    "stories260k": ["tinystories-valid-a.txt", "tinystories-valid-b.txt"],
    "babyllama-tok105": ["tinystories-valid-a.txt", "tinystories-valid-b.txt"],
    "qwen3-dense-mini": ["debprose-test.txt", "wiki.test.raw"],
    "qwen3-moe-mini": ["debprose-test.txt", "wiki.test.raw"],
}
ALL_MODELS = ["stories260k", "babyllama-tok105", "qwen3-dense-mini", "qwen3-moe-mini"]


def parse_args():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer baselines (gs 64 only), shorter slices, damage on stories260k only")
    ap.add_argument("--models", default=",".join(ALL_MODELS), help="comma-separated model names under --shared/models")
    ap.add_argument("--texts", default="", help="comma-separated texts under --shared/evaltext for every model (default: per model)")
    ap.add_argument("--max-tokens", type=int, default=16384, help="tokens of each text per measurement (default 16384)")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--damage-models", default="stories260k,qwen3-dense-mini", help="models with per-unit ground truth ('' for none)")
    ap.add_argument("--damage-cands", default="2:128,2:32,3:64,4:64", help="candidates of the per-unit measurement")
    ap.add_argument("--veto-cands", default="2:128,2:64,2:32",
                    help="MLX-quantizer candidates measured per unit too: low SQNR, to see where damage explodes")
    ap.add_argument("--oracle-cands", default="5:64,6:64",
                    help="more opt candidates measured per unit (not fitted): with --damage-cands, the menu of the "
                         "allocation headroom (the best plan under the measured damages)")
    ap.add_argument("--oracle-sizes", default="3:64,4:64,5:64", help="uniform configs at whose sizes the headroom is measured")
    ap.add_argument("--damage-tokens", type=int, default=4096, help="tokens of the per-unit measurement (first text)")
    ap.add_argument("--phases", default="damage,calibrate,oracle,sweep,report",
                    help="damage, calibrate, oracle, sweep, report (comma-separated)")
    ap.add_argument("--weights", default="calibrated",
                    help="weights of the ramfit rows: 'calibrated' (bench/quality/weights.json as the calibrate phase "
                         "writes it), 'builtin' (the planner's defaults) or a weights file (docs/plan.md)")
    ap.add_argument("--quick-models", default="", help="models that get the quick baseline set in a full run")
    ap.add_argument("--calib-tokens", type=int, default=32768,
                    help="tokens of the calibration text (the second half of each model's first text); 0: no calibrated "
                         "methods")
    ap.add_argument("--calibrated-only", action="store_true",
                    help="only the calibrated comparison: at the size of every uniform baseline, uniform, GPTQ uniform, "
                         "ramfit data-free, ramfit activation-weighted and ramfit + GPTQ; its section of quality.md is "
                         "rewritten between its markers, the rest of the file is kept (reuses --work's measurements)")
    ap.add_argument("--bin", default=os.path.join(root, "build", "ramfit"), help="the ramfit CLI")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(root), "shared"))
    ap.add_argument("--work", default=os.path.join(root, "build", "quality-work"), help="profiles, plans and result caches")
    ap.add_argument("--out", default=os.path.join(root, "docs"), help="where quality.md and the SVGs go")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    if a.calibrated_only and a.calib_tokens <= 0:
        ap.error("--calibrated-only needs --calib-tokens > 0")
    if a.quick:
        a.max_tokens = min(a.max_tokens, 4096)
        a.damage_tokens = min(a.damage_tokens, 2048)
    a.damage_cands, a.veto_cands, a.oracle_cands = (configs(x) for x in (a.damage_cands, a.veto_cands, a.oracle_cands))
    a.oracle_sizes = set(configs(a.oracle_sizes))
    return a


def configs(text):
    """'4:64,3:32' -> [(4, 64), (3, 32)]"""
    return [tuple(int(v) for v in c.split(":")) for c in text.split(",") if c]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def rule_baselines(quick):
    """(label, family, how): how is a --method string or ("llama", preset)."""
    out = []
    gss = [64] if quick else [32, 64, 128]
    for bits in (2, 3, 4, 5, 6, 8):
        for gs in gss:
            out.append(("uniform %d/%d" % (bits, gs), "uniform", "uniform:%d:%d" % (bits, gs)))
    if quick:
        out += [("uniform 4/32", "uniform", "uniform:4:32"), ("uniform 4/128", "uniform", "uniform:4:128")]
    for lo, hi in ((2, 6), (3, 4), (3, 6), (4, 6)) if not quick else ((3, 6), (4, 6)):
        out.append(("mixed_%d_%d" % (lo, hi), "mixed", "mixed:%d:%d" % (lo, hi)))
    for p in ("Q3_K_M", "Q4_K_M", "Q5_K_M") if not quick else ("Q4_K_M",):
        out.append(("llama.cpp %s-like" % p, "llama.cpp", ("llama", p)))
    return out


class ModelRun:
    def __init__(self, a, cli, name):
        self.a, self.cli, self.name = a, cli, name
        self.dir = os.path.join(a.shared, "models", name)
        self.work = os.path.join(a.work, name)
        os.makedirs(self.work, exist_ok=True)
        self.profile_path = os.path.join(self.work, "profile.json")
        if not os.path.exists(self.profile_path):
            log("%s: analyse" % name)
            cli.run(["analyse", self.dir, "-o", self.profile_path, "--mode", "both", "--quiet", "--json", "--threads", a.threads])
        self.profile = load_profile(self.profile_path)
        texts = a.texts.split(",") if a.texts else TEXTS.get(name, ["wiki.test.raw"])
        self.texts = [os.path.join(a.shared, "evaltext", t) for t in texts]
        self.ev = Evaluator(cli, self.work, self.dir, a.max_tokens, a.ctx)
        self.template = self.plan("uniform-4-64", ["--method", "uniform:4:64"])[1]
        self.calib = None

    def calibrate(self):
        """Statistics (ramfit calibrate) on the second half of the first text, and the activation-weighted profile:
        {stats, checksum, profile, text, from_byte, tokens, head_tokens}. Every evaluated token lies in the first
        half (checked by counting its tokens), so no text is both calibrated on and evaluated."""
        if self.calib:
            return self.calib
        a, cli = self.a, self.cli
        src = self.texts[0]
        with open(src, "rb") as f:
            data = f.read()
        cut = data.index(b"\n", len(data) // 2) + 1
        head = os.path.join(self.work, "calib-head.txt")
        text = os.path.join(self.work, "calib-text.txt")
        for path, part in ((head, data[:cut]), (text, data[cut:])):
            with open(path, "wb") as f:
                f.write(part)
        head_tokens = cli.run(["tokenize", self.dir, "--file", head, "--count", "--no-special", "--json"])["tokens"]
        if head_tokens < max(a.max_tokens, a.damage_tokens) + 1024:
            raise RuntimeError("%s: the first half of %s has %d tokens: the evaluated %d would reach the calibration "
                               "text" % (self.name, src, head_tokens, a.max_tokens))
        stats = os.path.join(self.work, "calib.stats.json")
        if not os.path.exists(stats):
            log("%s: calibrate on %s from byte %d" % (self.name, os.path.basename(src), cut))
            cli.run(["calibrate", self.dir, "--file", text, "-o", stats, "--max-tokens", a.calib_tokens, "--quiet", "--json",
                     "--threads", a.threads])
        info = load_json(stats)
        prof = os.path.join(self.work, "profile-act.json")
        if not os.path.exists(prof):
            log("%s: analyse --stats" % self.name)
            cli.run(["analyse", self.dir, "-o", prof, "--mode", "opt", "--stats", stats, "--quiet", "--json", "--threads",
                     a.threads])
        self.calib = {"stats": stats, "checksum": info["data"]["fnv1a64"], "profile": prof, "text": os.path.basename(src),
                      "from_byte": cut, "bytes": len(data), "tokens": info["text"]["tokens"], "head_tokens": head_tokens}
        return self.calib

    def gptq(self):
        """What ramfit quantize gets for GPTQ, and what the checkpoint depends on beyond the plan."""
        c = self.calibrate()
        return (["--mode", "gptq", "--stats", c["stats"]], ["gptq", c["checksum"]])

    def plan(self, label, args, profile=None):
        """(report, plan file contents) of one `ramfit plan` call, or (None, None) when it fails."""
        path = os.path.join(self.work, "plan-%s.json" % label.replace("/", "-").replace(" ", "_"))
        extra = []
        if "uncalibrated" in label:
            extra = ["--weights", self.a.prior_file]
        elif self.a.weights_file and "--method" not in args:
            extra = ["--weights", self.a.weights_file]
        r = self.cli.run(["plan", profile or self.profile_path, "--json", "-o", path] + args + extra, ok_fail=True)
        if r is None:
            return None, None
        r["plan_path"] = path
        return r, load_json(path)


def sweep(a, cli, m):
    """Rows {label, family, mode, bytes, bpw, unsafe, texts{...}} for one model."""
    rows = []
    params = m.profile["totals"]["params"]
    min_safe = None
    cap = None
    only = a.calibrated_only  # the uniform sizes and the calibrated comparison's methods only
    for label, family, how in rule_baselines(a.quick or m.name in a.quick_models.split(",")):
        if only and family != "uniform":
            continue
        if isinstance(how, tuple):
            path = os.path.join(m.work, "plan-%s.json" % how[1])
            total = write_plan(m.template, m.profile, llama_preset(m.profile, how[1]), "mlx", "llama:" + how[1], path)
        else:
            r, _ = m.plan(how.replace(":", "-"), ["--method", how])
            if r is None:
                log("  %s: plan failed, skipped" % label)
                continue
            path, total = r["plan_path"], r["plans"][0]["total_bytes"]
            if how == "uniform:8:64":
                cap = total  # the 8.5 bpw end of the sweep (8/64 is 8.5 bpw on a BF16 model)
        rows.append({"label": label, "family": family, "mode": "mlx", "bytes": total, "plan": path})
    rows = [r for r in rows if cap is None or r["bytes"] <= cap]
    calibrated = a.calib_tokens > 0
    if calibrated:  # GPTQ on every uniform baseline: what a GPTQ user gets at that size (mlx-lm's gptq: MLX's grid)
        rows += [{"label": "GPTQ " + r["label"], "family": "gptq", "mode": "gptq+mlx", "bytes": r["bytes"], "plan": r["plan"],
                  "quant": m.gptq(), "target": r["bytes"]} for r in rows if r["family"] == "uniform"]
    r, _ = m.plan("min-safe", ["--budget", m.profile["totals"]["bytes"], "--mode", "opt"])
    min_safe = r["min_safe"] if r else None  # the default (opt) quantizer's min-safe at the 9 dB veto
    sizes = sorted({r["bytes"] for r in rows} | ({min_safe} if min_safe and not only else set()))
    for size in sizes:
        below = min_safe is not None and size < min_safe
        methods = [("ramfit opt", "ramfit", ["--mode", "opt"]), ("ramfit mlx", "ramfit-mlx", ["--mode", "mlx"]),
                   ("RAM", "ram", ["--method", "ram"])]
        # the priors before calibration, to show what the calibration changes
        methods.append(("ramfit opt, uncalibrated priors", "uncalibrated", ["--mode", "opt"]))
        if calibrated:  # the activation-weighted profile's plan, quantized as it is and with GPTQ
            methods += [("ramfit opt, activation-weighted", "ramfit-act", ["--mode", "opt"]),
                        ("ramfit opt + GPTQ, activation-weighted", "ramfit-gptq", ["--mode", "opt"])]
        if only:
            methods = [x for x in methods if x[1] in ("ramfit", "ramfit-act", "ramfit-gptq")]
        for label, family, args in methods:
            unsafe = below  # per method: the MLX quantizer's min-safe is higher than opt's
            extra = ["--unsafe"] if unsafe else []
            prof = m.calibrate()["profile"] if family in ("ramfit-act", "ramfit-gptq") else None
            pfam = "ramfit-act" if family == "ramfit-gptq" else family  # one plan for both
            r, _ = m.plan("%s-%d" % (pfam, size), ["--budget", size] + args + extra, prof)
            if r is None and not unsafe:
                r, _ = m.plan("%s-%d" % (pfam, size), ["--budget", size] + args + ["--unsafe"], prof)
                unsafe = True
            if r is None:
                log("  %s at %d B: no plan" % (label, size))
                continue
            p = r["plans"][0]
            rows.append({"label": label, "family": family, "mode": p["mode"], "bytes": p["total_bytes"], "plan": r["plan_path"],
                         "target": size, "unsafe": bool(unsafe), "status": p["status"]})
            if family == "ramfit-gptq":
                rows[-1]["quant"] = m.gptq()
                rows[-1]["mode"] = "gptq+" + p["mode"]
    t0 = time.time()
    for i, r in enumerate(rows):
        r["bpw"] = 8.0 * r["bytes"] / params
        r["texts"] = m.ev.measure(r["plan"], m.texts, r.get("quant"))
        first = r["texts"][os.path.basename(m.texts[0])]
        log("  %s [%d/%d %.0fs] %-22s %9d B %6.3f bpw  PPL %.4f  KLD %.5f" % (m.name, i + 1, len(rows), time.time() - t0, r["label"],
                                                                       r["bytes"], r["bpw"], first["ppl"], first["kld"]))
    return {"model": m.name, "source": a.source, "params": params, "unquantized_bytes": m.profile["totals"]["bytes"], "min_safe": min_safe,
            "texts": [os.path.basename(t) for t in m.texts], "max_tokens": a.max_tokens, "ctx": a.ctx, "rows": rows,
            "calib": m.calib}


def run_damage(a, cli, m):
    text = m.texts[0]
    ev = Evaluator(cli, m.work, m.dir, a.damage_tokens, a.ctx)
    dwork = os.path.join(m.work, "units")
    os.makedirs(dwork, exist_ok=True)
    rows = damage.collect(cli, ev, m.profile, m.template, a.damage_cands, "opt", text, dwork, log)
    rows += damage.collect(cli, ev, m.profile, m.template, a.veto_cands, "mlx", text, dwork, log)
    rows += damage.collect(cli, ev, m.profile, m.template, [c for c in a.oracle_cands if c not in a.damage_cands], "opt",
                           text, dwork, log, oracle=True)
    return {"model": m.name, "source": a.source, "text": os.path.basename(text), "tokens": a.damage_tokens, "mode": "opt", "rows": rows}


def main():
    a = parse_args()
    a.source = report.source_version()  # when the run starts: later edits to the tree do not change what measured
    phases = set() if a.calibrated_only else set(a.phases.split(","))
    cli = Cli(a.bin, a.threads, a.verbose)
    os.makedirs(a.work, exist_ok=True)
    models = [n for n in a.models.split(",") if n and os.path.isdir(os.path.join(a.shared, "models", n))]
    dmodels = [n for n in a.damage_models.split(",") if n in models]
    if a.quick:
        dmodels = [n for n in dmodels if n == "stories260k"]
    a.weights_file = {"calibrated": os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.json"),
                      "builtin": ""}.get(a.weights, a.weights)
    a.prior_file = os.path.join(a.work, "weights-uncalibrated.json")
    save_json(a.prior_file, damage.uncalibrated_weights_file())
    state_path = os.path.join(a.work, "state.json")
    state = load_json(state_path, {"sweeps": {}, "damage": {}})
    runs = {name: ModelRun(a, cli, name) for name in models}
    for name in dmodels:
        if "damage" in phases:
            log("%s: per-unit damage" % name)
            state["damage"][name] = run_damage(a, cli, runs[name])
            save_json(state_path, state)
    profiles = {n: load_profile(os.path.join(a.work, n, "profile.json")) for n in models}
    if "calibrate" in phases and a.weights == "calibrated":
        w = report.calibrate(state, profiles, [n for n in dmodels if n in state["damage"]])
        save_json(a.weights_file, w)
        log("calibrated weights: %s" % json.dumps(w, sort_keys=True))
    state["weights"] = load_json(a.weights_file) if a.weights_file else "builtin"
    if "oracle" in phases and isinstance(state["weights"], dict):
        for name in dmodels:
            d = state["damage"].get(name)
            if not d:
                continue
            m = runs[name]
            log("%s: allocation headroom" % name)
            state.setdefault("oracle", {})[name] = {
                "text": d["text"], "tokens": a.max_tokens, "source": a.source,
                "sizes": oracle.measure(m.ev, m.profile, m.template, d["rows"], state["weights"], os.path.join(a.shared, "evaltext", d["text"]),
                                        os.path.join(m.work, "units"), a.oracle_sizes)}
            save_json(state_path, state)
    if a.calibrated_only:  # kept apart from the full sweeps, whose report sections stay as they are
        for name in models:
            log("%s: calibrated comparison" % name)
            state.setdefault("calibrated", {})[name] = sweep(a, cli, runs[name])
            save_json(state_path, state)
        state["calibrated_command"] = "bench/quality.sh " + " ".join(sys.argv[1:])
        state["calibrated_models"] = models
        save_json(state_path, state)
        report.splice_calibrated(a, state)
        return
    for name in models:
        m = runs[name]
        if "sweep" in phases:
            log("%s: sweep" % name)
            state["sweeps"][name] = sweep(a, cli, m)
            save_json(state_path, state)
    if "report" in phases:
        state["command"] = "bench/quality.sh " + " ".join(sys.argv[1:])
        state["models"] = models
        state["damage_models"] = [n for n in dmodels if n in state["damage"]]
        report.write(a, state, profiles)


if __name__ == "__main__":
    main()
