#!/usr/bin/env python3
"""What mlx-lm's strict load accepts, per architecture fixture: tests/fixtures/mlxlm/<fixture>.json.

    python3 tests/ref/mlxlm_expect.py --mlx-lm /tmp/mlxlm --ramfit build/ramfit [--work DIR]
    python3 tests/ref/mlxlm_expect.py --compare tests/fixtures/mlxlm/qwen3.json MLX_DIR
    python3 tests/ref/mlxlm_expect.py --check-all --ramfit build/ramfit        (CTest mlxlm_layouts)

Generate (needs an mlx-lm checkout, no MLX): for each folder of tests/fixtures/arch/, ramfit
writes the MLX checkpoint of one fixed plan,

    ramfit analyse FIXTURE -o P.profile.json
    ramfit plan P.profile.json --method uniform:4:32 -o P.plan.json   (routers as the plan gives)
    ramfit quantize FIXTURE --plan P.plan.json -o OUT --force

and tests/ref/mlxlm_check.py loads OUT the way mlx-lm's load_model does. The expectation is the
file contents mlx-lm accepts: every tensor (name, safetensors dtype, shape) and the config keys
it needs, taken from the first of these that loads:
  1. OUT as ramfit wrote it;
  2. OUT with the config keys mlx-lm's ModelArgs read written in their older spelling (see
     mlxlm_check.config_keys: rope_theta, rope_scaling, num_experts, vocab_size, ...);
  3. OUT rearranged as mlx-lm's model file requires (FIXES below, by model_type: llama4_text as
     the llama4 wrapper; gpt_oss's experts in the layout its sanitize() leaves alone), with 2.'s
     keys.
A fixture none of these loads gets "loadable": false and the reason. Each file records whether
ramfit's output loaded as written ("loads_as_written") and what failed.

Compare (no mlx-lm needed; for CI): an MLX checkpoint's tensors (names, dtypes, shapes), its
config keys and quantization against one expectation file; exit 1 with the differences.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import mlxlm_check as C  # noqa: E402

MLX_LM_COMMIT = "d78bf58e217c904ec282ed8da9b947491f78c022"
PLAN = "uniform:4:32"


def read_checkpoint(d):
    tensors = {}
    for f in sorted(Path(d).glob("model*.safetensors")):
        tensors.update(C.read_safetensors_header(str(f))[0])
    with open(Path(d) / "config.json") as f:
        return tensors, json.load(f)


def write_checkpoint(d, tensors, cfg):
    os.makedirs(d)
    C.write_safetensors(os.path.join(d, "model.safetensors"), tensors, {"format": "mlx"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


# -- rearrangements mlx-lm's model files require (step 3) ------------------------------------------

def fix_llama4_text(tensors, cfg):
    """mlx-lm's llama4_text is a different, dense model; it loads Llama 4 only as the llama4
    wrapper (Llama4ForConditionalGeneration): model_type llama4, the text config under
    text_config, every tensor and per-module quantization entry under language_model."""
    q = cfg.get("quantization", {})
    q = {(k if not isinstance(v, dict) else "language_model." + k): v for k, v in q.items()}
    text = {k: v for k, v in cfg.items() if k not in ("quantization", "quantization_config")}
    new = {"model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"],
           "text_config": text, "quantization": q, "quantization_config": q}
    return {"language_model." + k: v for k, v in tensors.items()}, new


def fix_gpt_oss(tensors, cfg):
    """mlx-lm's gpt_oss sanitize() converts only the published MXFP4 experts (…_blocks/_scales)
    and leaves a checkpoint alone once any name holds gate_proj.weight: the experts must be
    written as SwitchGLU's stacked Linear weights. Hugging Face's bf16 layout is gate_up_proj
    [E, H, 2I] with gate and up interleaved along the last axis, down_proj [E, I, H] (both
    transposed against a Linear), biases gate_up_proj_bias [E, 2I], down_proj_bias [E, H]."""
    out = {}
    for k, (st, shape) in tensors.items():
        if k.endswith(".experts.gate_up_proj"):
            e, h, i2 = shape
            for part in ("gate_proj", "up_proj"):
                out[k.replace("gate_up_proj", part) + ".weight"] = (st, (e, i2 // 2, h))
        elif k.endswith(".experts.gate_up_proj_bias"):
            e, i2 = shape
            for part in ("gate_proj", "up_proj"):
                out[k.replace("gate_up_proj_bias", part) + ".bias"] = (st, (e, i2 // 2))
        elif k.endswith(".experts.down_proj"):
            e, i, h = shape
            out[k + ".weight"] = (st, (e, h, i))
        elif k.endswith(".experts.down_proj_bias"):
            out[k.replace("down_proj_bias", "down_proj.bias")] = (st, shape)
        else:
            out[k] = (st, shape)
    return out, cfg


FIXES = {"llama4_text": ("the llama4 wrapper: model_type llama4, tensors under language_model.",
                         fix_llama4_text),
         "gpt_oss": ("experts as SwitchGLU's stacked Linear weights (experts.*_proj.weight)",
                     fix_gpt_oss)}

# Fixtures no layout of which mlx-lm can load, and why (checked: every step above fails).
UNLOADABLE = {
    "qwen2_moe": "mlx-lm's qwen2_moe builds every decoder layer as a sparse MoE block (gate, "
                 "switch_mlp, shared_expert, shared_expert_gate): it reads neither mlp_only_layers "
                 "nor decoder_sparse_step. This fixture has mlp_only_layers [0]: layer 0's dense "
                 "mlp.{gate,up,down}_proj have no place in mlx-lm's model and its MoE parameters "
                 "would be missing. Published Qwen2-57B-A14B and Qwen1.5-MoE-A2.7B have "
                 "mlp_only_layers [] and decoder_sparse_step 1, which mlx-lm loads.",
}


# -- generation -------------------------------------------------------------------------------------

def run(cmd, log):
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise SystemExit(f"mlxlm_expect: {' '.join(map(str, cmd))} failed (see {log})")


def ramfit_revision(ramfit):
    """The last commit of ramfit's sources (src, include, cli), "-dirty" with changes to them."""
    repo = str(Path(ramfit).resolve().parent.parent)
    paths = ["--", "src", "include", "cli", "CMakeLists.txt"]
    try:
        rev = subprocess.run(["git", "-C", repo, "log", "-1", "--format=%h"] + paths,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain"] + paths,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def summary(rep):
    """Short lines of what failed, for the expectation file."""
    out = []
    if rep["error"]:
        out.append(f"{rep['error'].splitlines()[0]} [{rep['stage']}]")
    out += [f"unexpected {u['name']}" for u in rep["unexpected"]]
    out += [f"missing {m['name']} {m['shape']}" for m in rep["missing"]]
    out += [f"shape {s['name']}: expected {s['expected']}, got {s['got']}" for s in rep["shape"]]
    out += [f"dtype {d['name']}: expected {d['expected']}, got {d['got']}" for d in rep["dtype"]]
    for c in rep["config"]:
        out.append(f"config {c['level']}{c['key']}: " + {
            "required": "required, absent",
            "load": f"absent, mlx-lm's default {json.dumps(c['default'])} fails the load",
            "default": f"absent, mlx-lm's default {json.dumps(c['default'])} differs from the "
                       f"config's {json.dumps(c['value'])}"}[c["kind"]])
    return out


def expectation(name, out_dir, utils, work):
    rep = C.check(out_dir, utils)
    exp = {"fixture": name, "loads_as_written": rep["ok"], "as_written": summary(rep)}
    candidates = [("as written", out_dir)]
    tensors, cfg = read_checkpoint(out_dir)
    if cfg.get("model_type") in FIXES:
        label, fix = FIXES[cfg["model_type"]]
        t2, c2 = fix(tensors, cfg)
        fixed = os.path.join(work, name + "-fixed")
        shutil.rmtree(fixed, ignore_errors=True)
        write_checkpoint(fixed, t2, c2)
        candidates.append(("rearranged as " + label, fixed))
    for how, d in candidates:
        r = rep if d == out_dir else C.check(d, utils)
        ok = r["ok"] or (r["with_config"] is not None and r["with_config"]["ok"])
        if not ok:
            continue
        tensors, cfg = read_checkpoint(d)
        loaded = r if r["ok"] else r["with_config"]
        need = {f"{c['level']}{c['key']}": c["value"] for c in r["config"]
                if c["kind"] in ("required", "load")}
        read = {f"{c['level']}{c['key']}": c["value"] for c in r["config"]
                if c["kind"] == "default"}
        exp.update({
            "loadable": True,
            "layout": how,
            "model_type": cfg.get("model_type"),
            "mlx_lm_module": r["module"],
            "config_required": need,
            "config_read": read,
            "quantization": cfg.get("quantization"),
            "tensors": [{"name": k, "dtype": st, "shape": list(shape),
                         **({"sanitize": "dropped"} if k in loaded["dropped"] else {})}
                        for k, (st, shape) in sorted(tensors.items())],
        })
        verify(exp, cfg, utils, os.path.join(work, name + "-expected"))
        return exp
    exp.update({"loadable": False, "reason": UNLOADABLE.get(name, "no layout tried loads")})
    return exp


def dump(exp):
    """JSON with one line per tensor (the files are read by people and diffed)."""
    head = {k: v for k, v in exp.items() if k != "tensors"}
    text = json.dumps(head, indent=1)
    if "tensors" not in exp:
        return text + "\n"
    rows = ",\n".join("  " + json.dumps(t) for t in exp["tensors"])
    return text[:-2] + ',\n "tensors": [\n' + rows + "\n ]\n}\n"


def with_keys(cfg, keys):
    """cfg with config keys ("text_config.x" nested) set."""
    cfg = json.loads(json.dumps(cfg))
    for key, value in keys.items():
        level, _, k = key.rpartition(".")
        (cfg.setdefault(level, {}) if level else cfg)[k] = value
    return cfg


def verify(exp, cfg, utils, d):
    """The expectation must describe a checkpoint mlx-lm loads and that compare() accepts: made
    from it (header-only files, the config keys set), checked again."""
    shutil.rmtree(d, ignore_errors=True)
    write_checkpoint(d, {t["name"]: (t["dtype"], tuple(t["shape"])) for t in exp["tensors"]},
                     with_keys(cfg, {**exp["config_required"], **exp["config_read"]}))
    rep = C.check(d, utils)
    if not rep["ok"] or rep["config"]:
        raise SystemExit(f"mlxlm_expect: {exp['fixture']}: the expected layout does not load:\n"
                         + C.format_report(rep))
    if compare_data(exp, d):
        raise SystemExit(f"mlxlm_expect: {exp['fixture']}: compare() refuses its own layout")


def generate(args):
    utils = C.import_mlx_lm(args.mlx_lm)
    work = args.work or tempfile.mkdtemp(prefix="mlxlm-expect-")
    os.makedirs(args.out, exist_ok=True)
    ramfit = str(Path(args.ramfit).resolve())
    rev = ramfit_revision(ramfit)
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    for fx in sorted(p for p in Path(args.fixtures).iterdir() if (p / "config.json").exists()):
        name, w = fx.name, os.path.join(work, fx.name)
        shutil.rmtree(w, ignore_errors=True)
        os.makedirs(w)
        prof, plan, out = (os.path.join(w, x) for x in ("p.profile.json", "p.plan.json", "mlx"))
        cmds = [[ramfit, "analyse", str(fx), "-o", prof],
                [ramfit, "plan", prof, "--method", PLAN, "-o", plan],
                [ramfit, "quantize", str(fx), "--plan", plan, "-o", out, "--force"]]
        refused = None
        for i, cmd in enumerate(cmds):
            if i == 2 and name in UNLOADABLE:
                # ramfit refuses what mlx-lm cannot load: the expectation is that refusal
                log = os.path.join(w, f"step{i}.log")
                with open(log, "w") as f:
                    r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
                if r.returncode:
                    refused = open(log).read().strip()
                    continue
            run(cmd, os.path.join(w, f"step{i}.log"))
        exp = {"mlx_lm_commit": args.mlx_lm_commit, "ramfit_revision": rev, "plan": PLAN,
               "commands": [" ".join(["ramfit"] + [rel(a) if a.startswith(str(ROOT)) else
                                                  os.path.basename(a) if a.startswith(w) else a
                                                  for a in c[1:]]) for c in cmds]}
        if refused is not None:
            exp.update({"loadable": False, "loads_as_written": False, "reason": UNLOADABLE[name],
                        "ramfit_refuses": refused})
        else:
            exp.update(expectation(name, out, utils, w))
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            f.write(dump(exp))
        print(f"{name:22s} loads as written: {'yes' if exp['loads_as_written'] else 'no '}  "
              + ("ramfit refuses it (mlx-lm cannot load it)" if refused is not None else
                 f"expected: {exp['layout']}, {len(exp['tensors'])} tensors"
                 + (f", config needs {', '.join(exp['config_required'])}"
                    if exp["config_required"] else "")
                 + (f", config should carry {', '.join(exp['config_read'])}"
                    if exp["config_read"] else "")
                 if exp["loadable"] else "mlx-lm cannot load it"))
    if not args.work:
        shutil.rmtree(work)
    return 0


# -- comparison (CI) --------------------------------------------------------------------------------

def same_config_value(want, got):
    """Equal, except that a rope_scaling dict may name its kind by "type" or "rope_type" (mlx-lm
    reads either; phi3 and qwen2_moe require "type")."""
    if isinstance(want, dict) and isinstance(got, dict):
        kind = want.get("type") or want.get("rope_type")
        strip = lambda d: {k: v for k, v in d.items() if k not in ("type", "rope_type")}  # noqa
        return strip(want) == strip(got) and kind in (got.get("type"), got.get("rope_type"))
    return want == got


def compare(exp_file, mlx_dir):
    with open(exp_file) as f:
        exp = json.load(f)
    if not exp["loadable"]:
        print(f"{exp_file}: mlx-lm cannot load this model ({exp['reason']})")
        return 1
    bad = compare_data(exp, mlx_dir)
    for b in bad:
        print(f"{mlx_dir}: {b}")
    if not bad:
        print(f"{mlx_dir}: matches {exp_file} ({len(exp['tensors'])} tensors)")
    return 1 if bad else 0


def compare_data(exp, mlx_dir):
    """The differences between an MLX checkpoint and an expectation, one line each."""
    tensors, cfg = read_checkpoint(mlx_dir)
    want = {t["name"]: (t["dtype"], tuple(t["shape"])) for t in exp["tensors"]}
    bad = [f"missing {k} {v[0]} {list(v[1])}" for k, v in sorted(want.items()) if k not in tensors]
    bad += [f"unexpected {k} {v[0]} {list(v[1])}" for k, v in sorted(tensors.items())
            if k not in want]
    bad += [f"{k}: expected {want[k][0]} {list(want[k][1])}, got {v[0]} {list(v[1])}"
            for k, v in sorted(tensors.items()) if k in want and want[k] != v]
    if cfg.get("model_type") != exp["model_type"]:
        bad.append(f"config model_type: expected {exp['model_type']}, got {cfg.get('model_type')}")
    for what, keys in (("required by mlx-lm's ModelArgs", exp["config_required"]),
                       ("read by mlx-lm, whose default differs", exp["config_read"])):
        for key, value in keys.items():
            level, _, k = key.rpartition(".")
            c = cfg.get(level, {}) if level else cfg
            if not isinstance(c, dict) or k not in c:
                bad.append(f"config {key}: absent ({what}; expected {json.dumps(value)})")
            elif not same_config_value(value, c[k]):
                bad.append(f"config {key}: expected {json.dumps(value)}, got {json.dumps(c[k])}")
    if cfg.get("quantization") != exp["quantization"]:
        bad.append(f"config quantization: expected {json.dumps(exp['quantization'])}, got "
                   f"{json.dumps(cfg.get('quantization'))}")
    return bad


def check_all(args):
    """CI: for every expectation file, run its commands with this ramfit on its fixture and
    compare the output (or require ramfit's refusal where the expectation records one). A
    fixture mlx-lm loads only rearranged (an unknown family, written in its source layout) is
    listed, not compared."""
    ramfit = str(Path(args.ramfit).resolve())
    work = tempfile.mkdtemp(prefix="mlxlm-check-")
    failed = 0
    try:
        for ef in sorted(Path(args.out).glob("*.json")):
            exp = json.load(open(ef))
            name, fx = ef.stem, Path(args.fixtures) / ef.stem
            w = os.path.join(work, name)
            os.makedirs(w)
            prof, plan, out = (os.path.join(w, x) for x in ("p.profile.json", "p.plan.json", "mlx"))
            cmds = [[ramfit, "analyse", str(fx), "-o", prof, "--quiet"],
                    [ramfit, "plan", prof, "--method", exp.get("plan", PLAN), "-o", plan],
                    [ramfit, "quantize", str(fx), "--plan", plan, "-o", out, "--force", "--quiet"]]
            for cmd in cmds[:2]:
                run(cmd, os.path.join(w, "log"))
            r = subprocess.run(cmds[2], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if exp.get("ramfit_refuses"):
                ok = r.returncode != 0 and not os.path.exists(out)
                print(f"{name:22s} {'refused, as expected' if ok else 'NOT refused'}")
                failed += not ok
                continue
            if r.returncode:
                print(f"{name:22s} quantize failed: {r.stdout.strip()}")
                failed += 1
                continue
            if not exp["loadable"] or not exp.get("loads_as_written"):
                print(f"{name:22s} not compared ({exp.get('layout') or exp.get('reason')})")
                continue
            bad = compare_data(exp, out)
            for b in bad:
                print(f"{name:22s} {b}")
            if not bad:
                print(f"{name:22s} matches what mlx-lm loads ({len(exp['tensors'])} tensors)")
            failed += bool(bad)
            shutil.rmtree(w)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mlx-lm", help="mlx-lm checkout (the folder holding mlx_lm/)")
    ap.add_argument("--mlx-lm-commit", default=MLX_LM_COMMIT, help="recorded in each file")
    ap.add_argument("--ramfit", default=str(ROOT / "build" / "ramfit"))
    ap.add_argument("--fixtures", default=str(ROOT / "tests" / "fixtures" / "arch"))
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "mlxlm"))
    ap.add_argument("--work", help="keep ramfit's outputs here (default: a temp dir, removed)")
    ap.add_argument("--compare", nargs=2, metavar=("EXPECTATION", "MLX_DIR"),
                    help="compare an MLX checkpoint with an expectation file")
    ap.add_argument("--check-all", action="store_true",
                    help="CI: rerun every expectation's commands with --ramfit and compare")
    args = ap.parse_args()
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    if args.compare:
        return compare(*args.compare)
    if args.check_all:
        return check_all(args)
    if not args.mlx_lm:
        ap.error("--mlx-lm is required to generate")
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
