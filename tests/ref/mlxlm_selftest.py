#!/usr/bin/env python3
"""Self test of tests/ref/mlxlm_check.py: it must pass what mlx-lm's own convert writes and fail
what mlx-lm would refuse.

    python3 tests/ref/mlxlm_selftest.py --mlx-lm /tmp/mlxlm [--work DIR] [--mlx MLX_PYTHON_DIR]

For each family fixture in tests/fixtures/arch/ (tiny checkpoints saved by transformers):
1. the Hugging Face checkpoint itself, its config given the keys mlx-lm reads (below), must load
   (mlx-lm loads unquantized Hugging Face checkpoints directly);
2. mlx-lm's convert (mlx_lm.convert.convert from the checkout, run on the stand-in: load_model,
   the dtype cast, quantize_model with the model's own quant_predicate or a mixed recipe,
   save_model and save_config; only the tokenizer and model card are skipped) writes MLX
   checkpoints at 4 bits group 32, 4 bits group 64, 8 bits group 64 and mixed_3_6 group 32: each
   must load;
3. hand-made wrong variants of the 4-bit output must fail, each with the finding it causes: a
   renamed tensor (unexpected + missing), a wrong scales shape (shape), a missing .scales (the
   module is then not quantized: shape), an extra tensor (unexpected), a per-module bits entry
   removed from a mixed output's config (shape), a packed weight stored as bfloat16 (dtype);
   each on the first quantized module and on the family's own (stacked experts, routers, MLA's
   embed_q/unembed_out, phi3's fused projections);
4. DeepSeek's sources: FP8 with 128x128 weight_scale_inv blocks loads (sanitize dequantizes),
   the fixture's 32x32 blocks fail; a quantized kv_b_proj whose per-head split the group size
   does not divide fails in sanitize's re-quantization.

With --mlx, the same runs use mlx's own Python nn and utils (python/mlx of an mlx checkout) on top
of the stand-in's mlx.core, and the verdicts must be the same: a check of the stand-in's Module,
load_weights and quantize against mlx itself.

The fixtures are written in transformers 5's config spelling, which mlx-lm at this commit does not
read everywhere (rope_parameters instead of rope_theta/rope_scaling, num_local_experts for
qwen3_moe, vocab_size only under text_config for gemma3): step 1 gives each config the spelling
of the published checkpoints, as an older transformers wrote it. qwen2_moe is left out of steps 2-3:
its fixture has a dense layer 0 (mlp_only_layers [0]) and mlx-lm's qwen2_moe builds every layer as
MoE, so no layout of it loads (the checker says so in step 1, which is expected to fail); so are
the llama4_text and gpt_oss sources (see FAMILIES).
"""

import argparse
import contextlib
import copy
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mlxlm_check as C  # noqa: E402

FIXTURES = HERE.parent / "fixtures" / "arch"

# fixture -> expected verdict of the Hugging Face source itself (step 1)
FAMILIES = {
    "mistral": True, "llama_ext": True, "qwen2": True, "qwen3": True, "mixtral": True,
    "qwen3_moe": True, "llama4_mm": True, "glm4_moe": True, "glm4_moe_lite": True,
    "deepseek_v3": True, "deepseek_v3_noqlora": True, "gemma3_text": True, "gemma3_mm": True,
    "phi3": True, "phi3_longrope": True, "deepseek_v3_bias": True, "gemma3_softcap": True,
    # sources mlx-lm cannot load (the steps below are skipped for them): qwen2_moe's dense
    # layer 0; Llama4ForCausalLM (model_type llama4_text: mlx-lm's llama4_text is another,
    # dense model); gpt_oss's bf16 experts (its sanitize() knows the published MXFP4 names only)
    "qwen2_moe": False, "llama4_text": False, "llama4_scout_style": False, "gpt_oss": False,
}


def legacy_config(cfg):
    """The config keys mlx-lm's ModelArgs read, spelled as published checkpoints spell them."""
    cfg = copy.deepcopy(cfg)

    def fix(c):
        rp = c.get("rope_parameters")
        if isinstance(rp, dict) and "rope_theta" in rp:
            c.setdefault("rope_theta", rp["rope_theta"])
            if rp.get("rope_type", "default") != "default":
                c.setdefault("rope_scaling", {k: v for k, v in rp.items() if k != "rope_theta"})
            else:
                c.setdefault("rope_scaling", None)
            if "partial_rotary_factor" in rp:
                c.setdefault("partial_rotary_factor", rp["partial_rotary_factor"])
        if c.get("model_type") == "qwen3_moe" and "num_experts" not in c:
            c["num_experts"] = c.get("num_local_experts")
        if c.get("model_type") == "phi3" and isinstance(c.get("rope_scaling"), dict):
            c["rope_scaling"].setdefault("type", c["rope_scaling"].get("rope_type"))
    fix(cfg)
    if isinstance(cfg.get("text_config"), dict):
        fix(cfg["text_config"])
        if "vocab_size" in cfg["text_config"]:
            cfg.setdefault("vocab_size", cfg["text_config"]["vocab_size"])
    return cfg


def copy_source(fixture, dst):
    os.makedirs(dst)
    for f in os.listdir(fixture):
        if f.endswith(".safetensors"):
            shutil.copy(os.path.join(fixture, f), dst)
    with open(os.path.join(fixture, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(legacy_config(cfg), f, indent=1)


def mlxlm_convert(utils, src, dst, bits=None, group_size=None, recipe=None):
    """mlx_lm.convert.convert from the checkout, with load() and save() reduced to their model
    parts (no tokenizer, no model card)."""
    import importlib
    conv = importlib.import_module("mlx_lm.convert")

    def load(path, **kw):
        model, config = utils.load_model(Path(path), lazy=True)
        return model, None, config

    def save(dst_path, src_path, model, tokenizer, config, donate_model=True):
        utils.save_model(dst_path, model, donate_model=donate_model)
        utils.save_config(config, config_path=Path(dst_path) / "config.json")

    conv.load, conv.save = load, save
    quantize = bits is not None or recipe is not None
    with contextlib.redirect_stdout(io.StringIO()):  # convert's [INFO] lines
        conv.convert(str(src), str(dst), quantize=quantize, q_group_size=group_size, q_bits=bits,
                     quant_predicate=recipe)


def read_dir(d):
    """{name: (st_dtype, shape)} of every model*.safetensors in d, and the config."""
    tensors = {}
    for f in sorted(Path(d).glob("model*.safetensors")):
        tensors.update(C.read_safetensors_header(str(f))[0])
    with open(Path(d) / "config.json") as f:
        return tensors, json.load(f)


def write_dir(d, tensors, cfg):
    os.makedirs(d)
    C.write_safetensors(os.path.join(d, "model.safetensors"), tensors, {"format": "mlx"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


# Family-specific modules worth breaking besides the first quantized one: stacked experts,
# MLA's per-head projections, phi3's fused projections, routers.
SPECIAL = ("switch_mlp", "experts", "embed_q", "unembed_out", "qkv_proj", "gate_up_proj",
           ".gate", "router")


def mutations(d, work):
    """Wrong variants of a quantized checkpoint: (label, dir, finding the report must hold)."""
    tensors, cfg = read_dir(d)
    scales = sorted(k[:-len(".scales")] for k in tensors if k.endswith(".scales"))
    victims = [scales[0]] + [m for m in [next((m for m in scales if pat in m), None)
                                         for pat in SPECIAL] if m]
    victims = list(dict.fromkeys(victims))
    out = []

    def variant(label, t, c, finding):
        p = os.path.join(work, label)
        write_dir(p, t, c)
        out.append((label, p, finding))

    for i, victim in enumerate(victims):
        tag = f"{i}:{victim.split('.', 2)[-1] if victim.count('.') > 1 else victim}"
        t = dict(tensors)
        t[victim + ".kernel"] = t.pop(victim + ".weight")
        variant(f"renamed-{i}", t, cfg, ("unexpected", victim + ".kernel"))
        t = dict(tensors)
        st, shape = t[victim + ".scales"]
        t[victim + ".scales"] = (st, shape[:-1] + (shape[-1] * 2,))
        variant(f"wrong-shape-{i}", t, cfg, ("shape", victim + ".scales"))
        t = dict(tensors)
        del t[victim + ".scales"]
        # a module named in the config's quantization is quantized whatever the files hold (the
        # scales are then missing); otherwise it stays a float Linear and the packed weight's
        # shape is wrong
        variant(f"no-scales-{i}", t, cfg, ("missing", victim + ".scales")
                if victim in cfg["quantization"] else ("shape", victim + ".weight"))
        t = dict(tensors)
        t[victim + ".extra"] = ("BF16", (4,))
        variant(f"extra-{i}", t, cfg, ("unexpected", victim + ".extra"))
        t = dict(tensors)
        t[victim + ".weight"] = ("BF16", t[victim + ".weight"][1])
        variant(f"bf16-weight-{i}", t, cfg, ("dtype", victim + ".weight"))
        out[-5:] = [(f"{lab} [{tag}]", p, f) for lab, p, f in out[-5:]]
    return out


def finding_present(rep, finding):
    kind, name = finding
    return any(x["name"] == name for x in rep[kind])


def run(args):
    utils = C.import_mlx_lm(args.mlx_lm, args.mlx)
    work = args.work or tempfile.mkdtemp(prefix="mlxlm-selftest-")
    failures, lines = [], []

    def expect(label, d, want_ok, finding=None):
        rep = C.check(d, utils)
        # with mlx's own nn only the verdict is known (its load_weights stops at the first error)
        good = rep["ok"] == want_ok and (finding is None or args.mlx is not None
                                         or finding_present(rep, finding))
        lines.append(f"{'ok  ' if good else 'BAD '} {label}: {'loads' if rep['ok'] else 'fails'}"
                     + ("" if rep["ok"] else f" ({(rep['error'] or '').splitlines()[0][:110]})"))
        if not good:
            failures.append(label)
            lines.append(C.format_report(rep))
        return rep

    for fam, source_loads in FAMILIES.items():
        src = os.path.join(work, fam, "hf")
        copy_source(FIXTURES / fam, src)
        expect(f"{fam} hf source", src, source_loads)
        if not source_loads:
            continue
        for label, kw in (("q4g32", dict(bits=4, group_size=32)),
                          ("q4g64", dict(bits=4, group_size=64)),
                          ("q8g64", dict(bits=8, group_size=64)),
                          ("mixed_3_6", dict(recipe="mixed_3_6", group_size=32)),
                          ("bf16", dict())):
            out = os.path.join(work, fam, label)
            mlxlm_convert(utils, src, out, **kw)
            expect(f"{fam} convert {label}", out, True)
        for label, d, finding in mutations(os.path.join(work, fam, "q4g32"),
                                           os.path.join(work, fam)):
            expect(f"{fam} {label}", d, False, finding)
        # a mixed output whose config loses one module's bits: that module is built at the
        # default bits and its packed shapes no longer match
        tensors, cfg = read_dir(os.path.join(work, fam, "mixed_3_6"))
        q = cfg["quantization"]
        odd = sorted(k for k, v in q.items() if isinstance(v, dict) and v.get("bits") != q["bits"])
        if odd:
            cfg2 = copy.deepcopy(cfg)
            del cfg2["quantization"][odd[0]]
            cfg2["quantization_config"] = cfg2["quantization"]
            p = os.path.join(work, fam, "mixed-lost-override")
            write_dir(p, tensors, cfg2)
            expect(f"{fam} mixed-lost-override", p, False, ("shape", odd[0] + ".weight"))
    # DeepSeek's FP8 sources: sanitize() dequantizes weight_scale_inv blocks of 128x128 (pad,
    # reshape, broadcast, from_fp8); the fixture's 32x32 blocks do not fit that and fail
    fp8 = FIXTURES / "deepseek_v3_fp8"
    d = os.path.join(work, "deepseek_v3_fp8", "hf")
    copy_source(fp8, d)
    expect("deepseek_v3_fp8 hf source (32x32 blocks)", d, False)
    tensors, cfg = read_dir(d)
    t = {k: (st, tuple(-(-n // 128) for n in tensors[k[:-len("_scale_inv")]][1]))
         if k.endswith("weight_scale_inv") else (st, shape) for k, (st, shape) in tensors.items()}
    p = os.path.join(work, "deepseek_v3_fp8", "hf128")
    write_dir(p, t, cfg)
    expect("deepseek_v3_fp8 hf source with 128x128 blocks", p, True)
    # a quantized kv_b_proj: sanitize() dequantizes it, splits it per head into embed_q and
    # unembed_out and quantizes those again at the inferred bits and group size; embed_q's input
    # is qk_nope_head_dim (16 here), which group 32 does not divide: mlx refuses
    tensors, cfg = read_dir(os.path.join(work, "deepseek_v3", "q4g32"))
    h, nope, vh, r = (cfg[k] for k in ("num_attention_heads", "qk_nope_head_dim", "v_head_dim",
                                       "kv_lora_rank"))
    t = {k: v for k, v in tensors.items() if ".embed_q." not in k and ".unembed_out." not in k}
    for l in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{l}.self_attn.kv_b_proj"
        t[pre + ".weight"] = ("U32", (h * (nope + vh), r * 4 // 32))
        t[pre + ".scales"] = t[pre + ".biases"] = ("BF16", (h * (nope + vh), r // 32))
    p = os.path.join(work, "deepseek_v3", "kv_b_proj-q4g32")
    write_dir(p, t, cfg)
    expect("deepseek_v3 quantized kv_b_proj (group 32 > nope 16)", p, False)
    print("\n".join(lines))
    print(f"{len(lines) - sum(1 for l in lines if not l.startswith(('ok', 'BAD')))} checks, "
          f"{len(failures)} wrong" + (f": {', '.join(failures)}" if failures else ""))
    if not args.work:
        shutil.rmtree(work)
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mlx-lm", required=True, help="mlx-lm checkout (the folder holding mlx_lm/)")
    ap.add_argument("--work", help="keep the checkpoints made here (default: a temp dir, removed)")
    ap.add_argument("--mlx", help="mlx checkout's python/ folder: compare with mlx's own nn")
    return run(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
