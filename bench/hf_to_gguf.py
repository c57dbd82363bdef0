#!/usr/bin/python3
"""Minimal Hugging Face -> GGUF (BF16) converter for the speed benchmarks (bench/llamacpp_side.sh).

llama.cpp's own convert_hf_to_gguf.py needs torch and transformers, which Debian 12 does not
package (transformers at all); this script needs only Debian's python3-numpy and python3-yaml
plus the gguf-py package from llama.cpp's source tree (put on PYTHONPATH by the caller). It
handles what `ramfit synth` writes for the Qwen3 shapes: families qwen3 and qwen3_moe (per-expert
or stacked expert tensors), BF16/F16/F32 safetensors, sharded or not, with the byte-level BPE
tokenizer.json of the ramfit test models. The tensors are written as BF16 (F32 for 1-D) and
llama-quantize makes the Q4_K_M file from it.

usage: hf_to_gguf.py MODEL_DIR OUT.gguf
"""
import json
import os
import struct
import sys

import numpy as np

import gguf  # from llama.cpp's gguf-py (PYTHONPATH)


def fail(msg):
    sys.stderr.write("hf_to_gguf: " + msg + "\n")
    sys.exit(1)


def open_safetensors(model_dir):
    """name -> (dtype, shape, np.memmap of the raw bytes) over every shard."""
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for f in files:
        path = os.path.join(model_dir, f)
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = json.loads(fh.read(n))
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        base = 8 + n
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            out[name] = (info["dtype"], info["shape"], mm[base + a: base + b])
    return out


def as_bf16(dtype, raw):
    """Raw safetensors bytes -> uint16 array of bf16 bits."""
    if dtype == "BF16":
        return raw.view(np.uint16)
    if dtype == "F16":
        f = raw.view(np.float16).astype(np.float32)
    elif dtype == "F32":
        f = raw.view(np.float32)
    else:
        fail("unsupported dtype " + dtype)
    u = np.ascontiguousarray(f).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def as_f32(dtype, raw):
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        return raw.view(np.float16).astype(np.float32)
    if dtype == "F32":
        return np.array(raw.view(np.float32))
    fail("unsupported dtype " + dtype)


class Stacked:
    """Expert tensors written one after the other as one [E, out, in] GGUF tensor (never all in
    memory at once: a 128-expert bank of a 30B model is over a gigabyte per layer)."""

    def __init__(self, parts):
        self.parts = parts
        self.nbytes = sum(p.nbytes for p in parts)

    def tofile(self, fout):
        for p in self.parts:
            np.ascontiguousarray(p).tofile(fout)


def main():
    if len(sys.argv) != 3:
        fail("usage: hf_to_gguf.py MODEL_DIR OUT.gguf")
    model_dir, out_path = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    mt = cfg.get("model_type")
    if mt == "qwen3":
        arch = gguf.MODEL_ARCH.QWEN3
    elif mt == "qwen3_moe":
        arch = gguf.MODEL_ARCH.QWEN3MOE
    else:
        fail("model_type %r is not handled (qwen3, qwen3_moe)" % mt)
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    nl = cfg["num_hidden_layers"]
    dim, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or dim // nh
    st = open_safetensors(model_dir)
    tmap = gguf.get_tensor_name_map(arch, nl)

    w = gguf.GGUFWriter(out_path, arch_name)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(os.path.basename(os.path.normpath(model_dir)))
    w.add_context_length(cfg.get("max_position_embeddings", 4096))
    w.add_embedding_length(dim)
    w.add_block_count(nl)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    if arch == gguf.MODEL_ARCH.QWEN3MOE:
        w.add_expert_count(cfg["num_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])

    # Tokenizer: byte-level BPE as in tokenizer.json, Qwen2 pre-tokenizer.
    tj = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    vocab = dict(tj["model"]["vocab"])
    special = set()
    for a in tj.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
        if a.get("special"):
            special.add(a["id"])
    n_vocab = cfg["vocab_size"]
    tokens = ["[PAD%d]" % i for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for t, i in vocab.items():
        if i < n_vocab:
            tokens[i] = t
            types[i] = gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eos = vocab.get("<|endoftext|>", n_vocab - 1)
    w.add_eos_token_id(eos)
    w.add_bos_token_id(eos)
    w.add_add_bos_token(False)

    # Tensors: 1-D as F32, matrices as BF16; per-expert HF tensors stacked into banks.
    plan = []  # (gguf name, numpy shape, tensor-like, raw dtype or None)
    expert_parts = {}
    for name, (dt, shape, raw) in st.items():
        parts = name.split(".")
        if ".mlp.experts." in name:
            # model.layers.L.mlp.experts.E.(gate|up|down)_proj.weight
            li, e, proj = int(parts[2]), int(parts[5]), parts[6]
            expert_parts.setdefault((li, proj), {})[e] = (dt, shape, raw)
            continue
        hf = name
        if name.endswith(".switch_mlp.gate_proj.weight") or name.endswith(".switch_mlp.up_proj.weight") \
                or name.endswith(".switch_mlp.down_proj.weight"):
            hf = name.replace("switch_mlp", "experts")
        gname = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if gname is None:
            fail("no GGUF name for tensor " + name)
        if len(shape) == 1:
            plan.append((gname, shape, as_f32(dt, raw), None))
        else:
            plan.append((gname, shape, as_bf16(dt, raw).reshape(shape), gguf.GGMLQuantizationType.BF16))
    nexp = cfg.get("num_experts", 0)
    for (li, proj), ex in sorted(expert_parts.items()):
        if len(ex) != nexp:
            fail("layer %d %s: %d of %d experts" % (li, proj, len(ex), nexp))
        dt, shape, _ = ex[0]
        arrs = [as_bf16(ex[e][0], ex[e][2]).reshape(ex[e][1]) for e in range(nexp)]
        # with the suffix, so the bank is "blk.L.ffn_*_exps.weight": llama-quantize quantizes only
        # tensors named *.weight (without it the banks stayed BF16 in the "Q4_K_M" file)
        gname = tmap.get_name("model.layers.%d.mlp.experts.%s.weight" % (li, proj), try_suffixes=(".weight",))
        if gname is None:
            fail("no GGUF name for layer %d experts %s" % (li, proj))
        plan.append((gname, [nexp] + list(shape), Stacked(arrs), gguf.GGMLQuantizationType.BF16))
    for gname, shape, t, raw in plan:
        if raw is None:
            w.add_tensor_info(gname, shape, np.dtype(np.float32), t.nbytes)
        else:
            w.add_tensor_info(gname, shape, np.dtype(np.uint16), t.nbytes, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for gname, shape, t, raw in plan:
        w.write_tensor_data(t)
    w.close()


if __name__ == "__main__":
    main()
