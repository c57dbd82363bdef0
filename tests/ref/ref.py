#!/usr/bin/env python3
"""Independent numpy reference for ramfit's engine: a plain port of Hugging Face transformers'
modeling code (5.17.0) for the causal-LM forward pass, from a checkpoint directory to logits.

Families: llama, mistral, mixtral, qwen2, qwen3, qwen3_moe, qwen2_moe, llama4_text and llama4
(Llama4ForConditionalGeneration, text part), glm4_moe, glm4_moe_lite, deepseek_v3 (also its block-FP8
checkpoints), gemma3_text and gemma3 (Gemma3ForConditionalGeneration, text part), phi3, gpt_oss
(BF16 experts only).

It is kept apart from the C code on purpose: it shares nothing with src/, needs only numpy
(Debian's python3-numpy) and reads the safetensors files with its own reader. Every formula follows
the transformers source (modeling_<family>.py, modeling_rope_utils.py, activations.py); where
transformers runs an operation in float32 even for a bf16 model, or in the model dtype, a comment
says so, since that is what an engine running in reduced precision must reproduce. This port itself
computes everything in float32 (default) or float64 (--f64) from the stored weights.

Usage:
  ref.py MODEL_DIR --ids IDS.json --out LOGITS.npy [--f64] [--decode-from N]
  ref.py --check-fixtures [DIR] [--tol 1e-4]

IDS.json: {"ids": [[...], ...]} (as in tests/fixtures/arch), or a bare list of rows or of ids.
LOGITS.npy: float32 [batch, seq, vocab]. --decode-from N runs the first N positions as one prefill
and then one token at a time with a KV cache (transformers' generate path).
"""
import json
import math
import os
import struct
import sys

try:
    import numpy as np
except ImportError:  # e.g. a pyenv python3 first on PATH: Debian's numpy is with /usr/bin/python3
    if os.path.exists('/usr/bin/python3') and os.path.realpath(sys.executable) != os.path.realpath('/usr/bin/python3'):
        os.execv('/usr/bin/python3', ['/usr/bin/python3'] + sys.argv)
    sys.exit('ref.py needs numpy (Debian: apt-get install python3-numpy)')


class RefError(Exception):
    """Bad input (file, tensor or config key named in the message)."""


# ----------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header, then the raw data
# ----------------------------------------------------------------------------------------------

def _fp8_e4m3fn_table():
    """All 256 float8_e4m3fn values: 1 sign, 4 exponent (bias 7), 3 mantissa bits, no infinities,
    0x7f/0xff are NaN, exponent 0 is subnormal (m/8 * 2^-6)."""
    t = np.zeros(256, dtype=np.float64)
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        e = (b >> 3) & 0xF
        m = b & 7
        if e == 15 and m == 7:
            t[b] = np.nan
        elif e == 0:
            t[b] = s * (m / 8.0) * 2.0 ** -6
        else:
            t[b] = s * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return t


FP8_E4M3 = _fp8_e4m3fn_table()
ITEMSIZE = {'BF16': 2, 'F16': 2, 'F32': 4, 'F64': 8, 'F8_E4M3': 1, 'I8': 1, 'U8': 1, 'I16': 2,
            'I32': 4, 'I64': 8, 'BOOL': 1}


def canonical_name(name):
    """...ForConditionalGeneration checkpoints keep the text model under language_model. (published
    layout: language_model.model.*, language_model.lm_head.*; transformers 5 in memory:
    model.language_model.*): map both to the ...ForCausalLM names. Vision tensors keep their names."""
    for old, new in (('model.language_model.', 'model.'), ('language_model.model.', 'model.'),
                     ('language_model.lm_head.', 'lm_head.')):
        if name.startswith(old):
            return new + name[len(old):]
    return name


class Checkpoint:
    """Lazily reads the tensors of a checkpoint directory (one file, several files, or a sharded
    index). get() converts to the compute dtype on each call, so a big model is never held whole."""

    def __init__(self, model_dir, block_size=None):
        self.dir = model_dir
        self.block_size = block_size  # block-FP8: quantization_config.weight_block_size
        index = os.path.join(model_dir, 'model.safetensors.index.json')
        if os.path.exists(index):
            try:
                wm = json.load(open(index))['weight_map']
            except (ValueError, KeyError, TypeError) as e:
                raise RefError('%s: not a safetensors index with a weight_map (%s)' % (index, e))
            files = sorted(set(wm.values()))
        else:
            files = sorted(f for f in os.listdir(model_dir) if f.endswith('.safetensors'))
        if not files:
            raise RefError('%s: no *.safetensors files' % model_dir)
        self.entries = {}  # canonical name -> (memmap, dtype, shape, start, end, file, stored name)
        for f in files:
            self._read_header(os.path.join(model_dir, f))

    def _read_header(self, path):
        try:
            size = os.path.getsize(path)
            with open(path, 'rb') as fh:
                raw = fh.read(8)
                if len(raw) != 8:
                    raise RefError('%s: shorter than the 8-byte header length' % path)
                n = struct.unpack('<Q', raw)[0]
                if n > size - 8:
                    raise RefError('%s: header length %d runs past the end of the file' % (path, n))
                header = json.loads(fh.read(n))
        except OSError as e:
            raise RefError('%s: %s' % (path, e))
        except ValueError as e:
            raise RefError('%s: header is not JSON (%s)' % (path, e))
        if not isinstance(header, dict):
            raise RefError('%s: header is not a JSON object' % path)
        data_start = 8 + n
        mm = np.memmap(path, dtype=np.uint8, mode='r') if size > 0 else None
        for name, info in header.items():
            if name == '__metadata__':
                continue
            try:
                dtype, shape, (b, e) = info['dtype'], [int(s) for s in info['shape']], info['data_offsets']
            except (KeyError, TypeError, ValueError):
                raise RefError('%s: tensor %s: bad header entry %r' % (path, name, info))
            if dtype not in ITEMSIZE:
                raise RefError('%s: tensor %s: unsupported dtype %s' % (path, name, dtype))
            count = int(np.prod(shape)) if shape else 1
            if e - b != count * ITEMSIZE[dtype] or b < 0 or data_start + e > size:
                raise RefError('%s: tensor %s: data offsets %s do not fit shape %s %s in a %d-byte file'
                               % (path, name, [b, e], shape, dtype, size))
            key = canonical_name(name)
            if key in self.entries:
                raise RefError('%s: tensor %s appears twice (also in %s)' % (path, name, self.entries[key][5]))
            self.entries[key] = (mm, dtype, shape, data_start + b, data_start + e, path, name)

    def has(self, name):
        return name in self.entries

    def shape(self, name):
        return self.entries[name][2]

    def _decode(self, raw, dtype, shape):
        if dtype == 'BF16':  # bf16 is the top half of a float32
            return (raw.view('<u2').astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if dtype == 'F16':
            return raw.view('<f2').reshape(shape)
        if dtype == 'F32':
            return raw.view('<f4').reshape(shape)
        if dtype == 'F64':
            return raw.view('<f8').reshape(shape)
        if dtype == 'F8_E4M3':
            return FP8_E4M3[raw].reshape(shape)
        return raw.view({'I8': 'i1', 'U8': 'u1', 'I16': '<i2', 'I32': '<i4', 'I64': '<i8',
                         'BOOL': 'u1'}[dtype]).reshape(shape)

    def get(self, name, dt, index=None):
        """Tensor `name` as dt; index: an int, an int array or a slice selecting rows of the first
        dimension (one expert of a fused expert tensor, the embedding rows of some token ids, a part of
        the head) without reading the rest. FP8 weights with a sibling `<name>_scale_inv` are dequantized (DeepSeek-V3 format)."""
        if name not in self.entries:
            raise RefError('%s: tensor %s is missing' % (self.dir, name))
        mm, dtype, shape, start, end, path, stored = self.entries[name]
        if index is None:
            t = self._decode(mm[start:end], dtype, shape)
        elif isinstance(index, slice):  # a contiguous range of rows, read at once
            a, b, _ = index.indices(shape[0])
            row_bytes = (end - start) // shape[0]
            t = self._decode(mm[start + a * row_bytes:start + b * row_bytes], dtype, [b - a] + shape[1:])
        else:
            rows = np.atleast_1d(np.asarray(index))
            row_bytes = (end - start) // shape[0]
            t = np.stack([self._decode(mm[start + r * row_bytes:start + (r + 1) * row_bytes], dtype, shape[1:])
                          for r in rows])
            if np.ndim(index) == 0:
                t = t[0]
        scale_name = name + '_scale_inv'
        if dtype == 'F8_E4M3' and scale_name in self.entries:
            if index is not None:
                raise RefError('%s: row selection of a block-FP8 tensor is not supported' % name)
            t = self._dequant_block_fp8(name, t, self.get(scale_name, np.float32))
        return t.astype(dt)

    def _dequant_block_fp8(self, name, q, s):
        """W = q * scale_inv per block of weight_block_size (the last row/column blocks may be partial).
        The product is taken in float32, as transformers' Fp8Dequantize does before the cast to the
        model dtype. (transformers derives the block from the scale grid, rows // scale_rows, and
        refuses shapes that do not divide; DeepSeek's own code uses the configured block with partial
        edge blocks, which is what the fixture's ground truth and this port use.)"""
        bm, bn = self.block_size or (128, 128)
        rows, cols = q.shape
        need = (-(-rows // bm), -(-cols // bn))
        if tuple(s.shape) != need:
            raise RefError('%s: %s_scale_inv has shape %s, blocks of %dx%d need %s'
                           % (self.dir, name, list(s.shape), bm, bn, list(need)))
        full = np.repeat(np.repeat(s, bm, axis=0), bn, axis=1)[:rows, :cols]
        return q.astype(np.float32) * full


# ----------------------------------------------------------------------------------------------
# configuration: both spellings (transformers 5: rope_parameters, dtype; older: rope_theta,
# rope_scaling, rope_local_base_freq, torch_dtype); a missing key takes the config class default
# ----------------------------------------------------------------------------------------------

# The defaults of each transformers config class (configuration_<family>.py) for the keys the
# forward pass reads. None means "derived" (head_dim = hidden/heads, kv heads = heads).
_BASE = dict(hidden_act='silu', rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
             head_dim=None, num_key_value_heads=None, rope_theta=10000.0, max_position_embeddings=2048)
DEFAULTS = {
    'llama': dict(_BASE, mlp_bias=False),
    'mistral': dict(_BASE, num_key_value_heads=8, sliding_window=4096, max_position_embeddings=131072),
    'mixtral': dict(_BASE, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
                    num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=131072),
    'qwen2': dict(_BASE, num_key_value_heads=32, use_sliding_window=False, sliding_window=4096,
                  max_window_layers=28, max_position_embeddings=32768),
    'qwen3': dict(_BASE, num_key_value_heads=32, head_dim=128, use_sliding_window=False, sliding_window=4096,
                  max_window_layers=28, max_position_embeddings=32768),
    'qwen2_moe': dict(_BASE, num_key_value_heads=16, use_sliding_window=False, sliding_window=4096,
                      max_window_layers=28, decoder_sparse_step=1, moe_intermediate_size=1408,
                      shared_expert_intermediate_size=5632, num_experts_per_tok=4, num_experts=60,
                      norm_topk_prob=False, mlp_only_layers=None, qkv_bias=True, max_position_embeddings=32768),
    'qwen3_moe': dict(_BASE, num_key_value_heads=4, use_sliding_window=False, sliding_window=4096,
                      decoder_sparse_step=1, moe_intermediate_size=768, num_experts_per_tok=8, num_experts=128,
                      norm_topk_prob=False, mlp_only_layers=None, max_position_embeddings=32768),
    'llama4_text': dict(_BASE, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
                        intermediate_size=8192, intermediate_size_mlp=16384, num_experts_per_tok=1,
                        num_local_experts=16, moe_layers=None, interleave_moe_layer_step=1, use_qk_norm=True,
                        no_rope_layers=None, no_rope_layer_interval=4, attention_chunk_size=8192,
                        layer_types=None, attn_temperature_tuning=True, floor_scale=8192, attn_scale=0.1,
                        max_position_embeddings=131072),
    'gemma3_text': dict(_BASE, num_key_value_heads=4, head_dim=256, hidden_activation='gelu_pytorch_tanh',
                        tie_word_embeddings=True, query_pre_attn_scalar=256, sliding_window=4096,
                        layer_types=None, final_logit_softcapping=None, attn_logit_softcapping=None,
                        use_bidirectional_attention=False, sliding_window_pattern=6, rope_theta=1e6,
                        rope_local_base_freq=10000.0, max_position_embeddings=131072),
    'phi3': dict(_BASE, rms_norm_eps=1e-5, max_position_embeddings=4096, original_max_position_embeddings=4096,
                 sliding_window=None),
    'deepseek_v3': dict(_BASE, num_key_value_heads=128, n_shared_experts=1, n_routed_experts=256,
                        routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64,
                        v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4, num_experts_per_tok=8,
                        first_k_dense_replace=3, norm_topk_prob=True, moe_intermediate_size=2048,
                        rope_interleave=True, max_position_embeddings=4096),
    'glm4_moe': dict(_BASE, num_key_value_heads=8, rms_norm_eps=1e-5, moe_intermediate_size=1408,
                     num_experts_per_tok=8, n_shared_experts=1, n_routed_experts=128, routed_scaling_factor=1.0,
                     n_group=1, topk_group=1, first_k_dense_replace=1, norm_topk_prob=True, use_qk_norm=False,
                     partial_rotary_factor=0.5, max_position_embeddings=131072),
    'glm4_moe_lite': dict(_BASE, num_key_value_heads=20, rms_norm_eps=1e-5, n_shared_experts=1,
                          n_routed_experts=64, routed_scaling_factor=1.8, kv_lora_rank=512, q_lora_rank=768,
                          qk_rope_head_dim=64, v_head_dim=256, qk_nope_head_dim=192, n_group=1, topk_group=1,
                          num_experts_per_tok=4, norm_topk_prob=True, moe_intermediate_size=1536,
                          rope_interleave=True, mlp_layer_types=None, max_position_embeddings=202752),
    'gpt_oss': dict(_BASE, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=150000.0,
                    sliding_window=128, num_local_experts=128, num_experts_per_tok=4, layer_types=None,
                    attention_bias=True, max_position_embeddings=131072),
}
# GptOssConfig's rope when the file has neither rope_parameters nor rope_scaling
GPT_OSS_ROPE = dict(rope_type='yarn', factor=32.0, beta_fast=32.0, beta_slow=1.0, truncate=False,
                    original_max_position_embeddings=4096)
# Keys a config.json may spell either way (the config classes' attribute_map): canonical first.
ALIASES = {
    'mixtral': [('num_local_experts', 'num_experts')],
    'qwen3_moe': [('num_experts', 'num_local_experts')],
    'gpt_oss': [('num_local_experts', 'num_experts')],
    'deepseek_v3': [('n_routed_experts', 'num_local_experts')],
    'glm4_moe': [('n_routed_experts', 'num_local_experts')],
    'glm4_moe_lite': [('n_routed_experts', 'num_local_experts'), ('qk_rope_head_dim', 'head_dim')],
}
# Wrapper classes whose text model sits in text_config, with their own tie_word_embeddings default.
WRAPPERS = {'llama4': ('llama4_text', False), 'gemma3': ('gemma3_text', True)}


class Config:
    def __init__(self, raw, path='config.json'):
        if not isinstance(raw, dict):
            raise RefError('%s: not a JSON object' % path)
        self.path = path
        mt = raw.get('model_type')
        tie = None
        self.wrapper = mt if mt in WRAPPERS else None
        if mt in WRAPPERS:
            text_type, tie_default = WRAPPERS[mt]
            text = raw.get('text_config')
            if not isinstance(text, dict):
                raise RefError('%s: model_type %s needs a text_config object' % (path, mt))
            text = dict(text)
            text.setdefault('model_type', text_type)
            # the wrapper's own tie_word_embeddings decides whether lm_head is the embedding
            tie = raw.get('tie_word_embeddings', text.get('tie_word_embeddings', tie_default))
            raw = text
            mt = text.get('model_type')
        if mt not in DEFAULTS:
            raise RefError('%s: model_type %r is not supported (supported: %s)'
                           % (path, mt, ', '.join(sorted(DEFAULTS) + sorted(WRAPPERS))))
        self.model_type = mt
        self.present = set(raw)  # keys spelled in the file (some defaults depend on presence)
        d = dict(DEFAULTS[mt])
        for canon, alias in ALIASES.get(mt, []):
            if canon not in raw and alias in raw:
                raw = dict(raw, **{canon: raw[alias]})
                self.present.add(canon)
        d.update(raw)
        for k in ('vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads'):
            if not isinstance(d.get(k), int) or d[k] <= 0:
                raise RefError('%s: %s must be a positive integer (got %r)' % (path, k, d.get(k)))
        if d.get('num_key_value_heads') is None:
            d['num_key_value_heads'] = d['num_attention_heads']
        if d.get('head_dim') is None:
            d['head_dim'] = d['hidden_size'] // d['num_attention_heads']
        if tie is not None:
            d['tie_word_embeddings'] = tie
        self.d = d

    def __getattr__(self, k):
        d = self.__dict__.get('d')
        if d is None or k not in d:
            raise AttributeError(k)
        return d[k]

    def get(self, k, default=None):
        return self.d.get(k, default)


def rope_parameters(cfg, layer_type=None):
    """transformers' RotaryEmbeddingConfigMixin.convert_rope_params_to_dict + standardize_rope_params
    (Phi3Config and Gemma3TextConfig override the first). Returns the dict the rope init reads."""
    mt = cfg.model_type
    if mt == 'gemma3_text':
        # Per layer type. Old configs: rope_scaling applies to full-attention layers only; sliding
        # layers take rope_local_base_freq; rope_theta (default 1e6) the full ones.
        given = cfg.get('rope_parameters')
        if isinstance(given, dict) and ('full_attention' in given or 'sliding_attention' in given):
            per = {k: dict(v) if isinstance(v, dict) else None for k, v in given.items()}
        else:
            per = {'full_attention': {'rope_type': 'default'}, 'sliding_attention': {'rope_type': 'default'}}
        if cfg.get('rope_scaling'):
            per['full_attention'] = dict(per.get('full_attention') or {}, **cfg.get('rope_scaling'))
        full = per.get('full_attention') or {'rope_type': 'default'}
        full.setdefault('rope_theta', cfg.get('rope_theta'))
        slide = per.get('sliding_attention') or {'rope_type': 'default'}
        slide.setdefault('rope_theta', cfg.get('rope_local_base_freq'))
        rp = dict(full if layer_type == 'full_attention' else slide)
        rp.setdefault('rope_type', rp.get('type', 'default'))
        if rp['rope_type'] in ('llama3', 'yarn', 'longrope'):
            rp.setdefault('original_max_position_embeddings', cfg.max_position_embeddings)
        return rp
    # rope_scaling (old spelling) wins over rope_parameters, as in convert_rope_params_to_dict
    rp = dict(cfg.get('rope_scaling') or cfg.get('rope_parameters') or
              (GPT_OSS_ROPE if mt == 'gpt_oss' else {}))
    rp.setdefault('rope_theta', cfg.get('rope_theta'))
    if mt == 'phi3':
        rp.setdefault('partial_rotary_factor', cfg.get('partial_rotary_factor', 1.0))
    elif cfg.get('partial_rotary_factor') is not None:
        rp.setdefault('partial_rotary_factor', cfg.get('partial_rotary_factor'))
    rp.setdefault('rope_type', rp.get('type', 'default'))
    if mt == 'phi3' and rp['rope_type'] in ('su', 'yarn'):
        # Phi3's old names for longrope. (transformers renames after standardizing, so for "su" it
        # would not copy original_max_position_embeddings in; this port renames first.)
        rp['rope_type'] = 'longrope'
    if rp['rope_type'] in ('llama3', 'yarn', 'longrope'):
        # Phi3 keeps the pretraining length outside rope_scaling; when the config (class) has that
        # attribute it overrides the value inside, otherwise max_position_embeddings is the default.
        if mt == 'phi3' or 'original_max_position_embeddings' in cfg.present:
            rp['original_max_position_embeddings'] = cfg.get('original_max_position_embeddings')
        else:
            rp.setdefault('original_max_position_embeddings', cfg.max_position_embeddings)
    return rp


# ----------------------------------------------------------------------------------------------
# rotary embeddings (modeling_rope_utils.py); inv_freq is float32 in transformers, and the angles
# position * inv_freq are float32 products, cos/sin computed in float32 even for a bf16 model
# (maybe_autocast disabled), then cast to the model dtype.
# ----------------------------------------------------------------------------------------------

def _mscale(scale, m=1.0):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def rope_init(rp, dim, max_pos, seq_len=None):
    """(inv_freq float32 [dim/2], attention_factor) for rope_type in rp. `dim` is the rotary width
    (head_dim, or head_dim * partial_rotary_factor where the family applies partial rotary)."""
    kind = rp['rope_type']
    base = float(rp['rope_theta'])
    exps = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv = (1.0 / (np.float32(base) ** exps)).astype(np.float32)
    if kind == 'default':
        return inv, 1.0
    if kind == 'linear':
        return (inv / np.float32(rp['factor'])).astype(np.float32), 1.0
    if kind == 'dynamic':
        # NTK-aware: the base grows with the sequence once it passes max_position_embeddings
        # (transformers recomputes it in the forward from max(position_ids) + 1).
        f = float(rp['factor'])
        s = max(seq_len or max_pos, max_pos)
        base = base * ((f * s / max_pos) - (f - 1)) ** (dim / (dim - 2))
        return (1.0 / (np.float32(base) ** exps)).astype(np.float32), 1.0
    if kind == 'llama3':
        f, lo, hi = float(rp['factor']), float(rp['low_freq_factor']), float(rp['high_freq_factor'])
        old = float(rp['original_max_position_embeddings'])
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > old / lo, inv / f, inv)
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        # Llama-4-Scout sets high_freq_factor == low_freq_factor: no medium band, the smoothing
        # (a division by zero there) is never selected
        with np.errstate(divide='ignore', invalid='ignore'):
            smooth = (old / wavelen - lo) / (hi - lo)
            smoothed = (1 - smooth) * out / f + smooth * out
        return np.where(medium, smoothed, out).astype(np.float32), 1.0
    if kind == 'yarn':
        orig = rp['original_max_position_embeddings']
        f = rp.get('factor')
        if f is None:
            f = max_pos / orig
        f = float(f)
        att = rp.get('attention_factor')
        if att is None:
            ms, msa = rp.get('mscale'), rp.get('mscale_all_dim')
            att = _mscale(f, ms) / _mscale(f, msa) if ms and msa else _mscale(f)
        beta_fast = rp.get('beta_fast') or 32
        beta_slow = rp.get('beta_slow') or 1

        def corr_dim(rot):
            return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
        low, high = corr_dim(beta_fast), corr_dim(beta_slow)
        if rp.get('truncate', True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
        pos_freqs = np.float32(base) ** exps
        extra = 1 - ramp  # share of the unscaled (extrapolated) frequency
        inv = (1.0 / (f * pos_freqs)) * (1 - extra) + (1.0 / pos_freqs) * extra
        return inv.astype(np.float32), float(att)
    if kind == 'longrope':
        orig = rp['original_max_position_embeddings']
        f = rp.get('factor')
        if f is None:
            f = max_pos / orig
        att = rp.get('attention_factor')
        if att is None:
            att = 1.0 if f <= 1.0 else math.sqrt(1 + math.log(f) / math.log(orig))
        # transformers picks the factor set by the length of the *current call* (max position + 1
        # > original_max_position_embeddings -> long_factor), and keeps the attention factor of
        # both sets; see longrope_frequency_update.
        ext = rp['long_factor'] if seq_len and seq_len > orig else rp['short_factor']
        ext = np.asarray(ext, dtype=np.float32)
        if ext.shape != (dim // 2,):
            raise RefError('longrope factors have %d entries, rotary width %d needs %d' % (ext.size, dim, dim // 2))
        return (1.0 / (ext * np.float32(base) ** exps)).astype(np.float32), float(att)
    raise RefError('rope_type %r is not supported' % kind)


def rope_angles(inv, pos):
    """[T, dim/2] float32 angles, as transformers' inv_freq @ position_ids in float32."""
    return pos.astype(np.float32)[:, None] * inv[None, :]


def rope_half(x, cos, sin, rot):
    """rotate_half rope (the two halves of the first `rot` dims form the pairs); x [B,T,H,D],
    cos/sin [T, rot/2]. Partial rotary (phi3, glm4_moe) leaves dims rot.. as they are."""
    c = np.concatenate([cos, cos], -1)[None, :, None, :]
    s = np.concatenate([sin, sin], -1)[None, :, None, :]
    xr, xp = x[..., :rot], x[..., rot:]
    h = rot // 2
    rotated = np.concatenate([-xr[..., h:], xr[..., :h]], -1)
    return np.concatenate([xr * c + rotated * s, xp], -1)


def rope_interleaved_llama4(x, cos, sin):
    """Llama 4: view (x0,x1),(x2,x3).. as complex numbers, multiply by polar(1, angle) (times the
    attention factor), view back: the output stays interleaved. Done in float32 in transformers."""
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def rope_interleaved_deepseek(x, cos, sin):
    """DeepSeek / GLM-4.7-Flash (rope_interleave): pairs (x0,x1),(x2,x3).. rotated by one frequency
    each; transformers writes the result de-interleaved ([rotated evens, rotated odds]). q and k get
    the same layout, so q.k is that of the interleaved rotation."""
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return np.concatenate([a * c - b * s, b * c + a * s], -1)


# ----------------------------------------------------------------------------------------------
# small pieces
# ----------------------------------------------------------------------------------------------

_erf = np.frompyfunc(math.erf, 1, 1)


def activation(name):
    """activations.py ACT2FN for the names these families use."""
    if name in ('silu', 'swish'):
        def silu(x):
            with np.errstate(over='ignore'):
                return x / (1 + np.exp(-x))
        return silu
    if name == 'gelu':  # exact (erf) GELU: nn.functional.gelu
        return lambda x: (0.5 * x * (1 + _erf(x.astype(np.float64) / math.sqrt(2)).astype(np.float64))).astype(x.dtype)
    if name in ('gelu_pytorch_tanh', 'gelu_new', 'gelu_fast', 'gelu_python_tanh'):
        k = math.sqrt(2 / math.pi)
        return lambda x: 0.5 * x * (1 + np.tanh(k * (x + 0.044715 * x ** 3)))
    if name == 'relu':
        return lambda x: np.maximum(x, 0)
    if name == 'relu2':
        return lambda x: np.square(np.maximum(x, 0))
    raise RefError('hidden_act %r is not supported' % name)


def rms_norm(x, w, eps):
    """Llama-style RMSNorm: x * rsqrt(mean(x^2) + eps) in float32, cast back to the model dtype,
    then times the weight (in the model dtype: for a bf16 model the product is a bf16 one)."""
    return w * (x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps))


def rms_norm_gemma(x, w, eps):
    """Gemma3RMSNorm: weights stored as offsets, y = norm(x) * (1 + w), all in float32, then cast to
    the model dtype (unlike Llama, the weight product is float32 too)."""
    return (x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)) * (1 + w)


def l2_norm(x, eps):
    """Llama4TextL2Norm: RMSNorm without a weight, in float32 (eps = rms_norm_eps)."""
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def sigmoid(x):
    with np.errstate(over='ignore'):
        return 1 / (1 + np.exp(-x))


def topk(x, k):
    """Indices of the k largest values of each row (ties: lower index first)."""
    return np.argsort(-x, axis=-1, kind='stable')[..., :k]


class Cache:
    """KV cache: keys after rope (and norms), values, per layer, [B, kv_heads, S, D]."""

    def __init__(self):
        self.k, self.v, self.length = {}, {}, 0

    def update(self, i, k, v):
        if i in self.k:
            k = np.concatenate([self.k[i], k], 2)
            v = np.concatenate([self.v[i], v], 2)
        self.k[i], self.v[i] = k, v
        return k, v


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------

class Model:
    def __init__(self, model_dir, dt=np.float32, raw=None):
        path = os.path.join(model_dir, 'config.json')
        if raw is None:
            try:
                raw = json.load(open(path))
            except OSError as e:
                raise RefError('%s: %s' % (path, e))
            except ValueError as e:
                raise RefError('%s: not JSON (%s)' % (path, e))
        self.raw = raw
        self.cfg = c = Config(raw, path)
        qc = raw.get('quantization_config') or (raw.get('text_config') or {}).get('quantization_config')
        block = None
        if isinstance(qc, dict) and qc.get('quant_method') == 'fp8':
            block = tuple(qc.get('weight_block_size') or (128, 128))
        self.ck = Checkpoint(model_dir, block)
        self.dt = dt
        self.mt = mt = c.model_type
        self.L = c.num_hidden_layers
        self.H, self.KV, self.D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.eps = float(c.rms_norm_eps)
        self.gemma = mt == 'gemma3_text'
        self.mla = mt in ('deepseek_v3', 'glm4_moe_lite')
        self.act = activation(c.get('hidden_activation') if self.gemma else c.hidden_act)
        self._setup_layers()

    # --- per-layer structure, from the config as the transformers classes build it ---

    def _setup_layers(self):
        c, mt, L = self.cfg, self.mt, self.L
        # attention kind per layer: 'full', 'sliding' (window) or 'chunked' (chunk)
        kinds = ['full'] * L
        self.window = None
        if mt in ('mistral', 'mixtral', 'phi3'):
            if c.get('sliding_window') is not None:  # one window for every layer
                kinds, self.window = ['sliding'] * L, c.sliding_window
        elif mt == 'qwen3_moe':
            if c.get('use_sliding_window') and c.get('sliding_window') is not None:
                kinds, self.window = ['sliding'] * L, c.sliding_window
        elif mt in ('qwen2', 'qwen3', 'qwen2_moe', 'gemma3_text', 'gpt_oss'):
            lt = c.get('layer_types')
            if lt is None:
                if mt in ('qwen2', 'qwen3'):
                    on = c.get('use_sliding_window') and c.get('sliding_window') is not None
                    lt = ['sliding_attention' if on and i >= c.max_window_layers else 'full_attention' for i in range(L)]
                elif mt == 'qwen2_moe':
                    lt = ['sliding_attention' if (i + 1) % 2 and i < c.max_window_layers and c.use_sliding_window
                          else 'full_attention' for i in range(L)]
                elif mt == 'gemma3_text':
                    pat = c.sliding_window_pattern  # what Gemma3TextConfig reads (default 6)
                    lt = ['sliding_attention' if (i + 1) % pat else 'full_attention' for i in range(L)]
                else:  # gpt_oss
                    lt = ['sliding_attention' if (i + 1) % 2 else 'full_attention' for i in range(L)]
            self.layer_types = lt
            kinds = ['sliding' if t == 'sliding_attention' else 'full' for t in lt]
            self.window = c.get('sliding_window')
            if mt in ('qwen2', 'qwen3', 'qwen2_moe') and not c.get('use_sliding_window'):
                kinds = ['full'] * L  # sliding_window is forced to None/0 when use_sliding_window is off
            if self.gemma and c.get('use_bidirectional_attention'):
                raise RefError('%s: use_bidirectional_attention is not supported' % c.path)
        elif mt == 'llama4_text':
            nrl = c.get('no_rope_layers') or [int((i + 1) % c.no_rope_layer_interval != 0) for i in range(L)]
            self.use_rope = [bool(v) for v in nrl]  # 1 = this layer uses rope (despite the key's name)
            lt = c.get('layer_types') or ['chunked_attention' if r else 'full_attention' for r in self.use_rope]
            chunk = c.get('attention_chunk_size')
            kinds = ['chunked' if t == 'chunked_attention' and chunk else 'full' for t in lt]
            self.window = chunk
            ml = c.get('moe_layers')
            step = c.interleave_moe_layer_step
            self.moe_layers = set(ml if ml is not None else range(step - 1, L, step))
        if self.window is not None and any(k != 'full' for k in kinds) and self.window <= 0:
            raise RefError('%s: sliding_window/attention_chunk_size must be positive' % c.path)
        self.kinds = kinds
        # rope configurations, by layer type for gemma3
        if self.gemma:
            self.rope = {t: rope_parameters(c, t) for t in ('full_attention', 'sliding_attention')}
        else:
            self.rope = {None: rope_parameters(c)}
        # rotary width
        if self.mla:
            self.rot = c.qk_rope_head_dim
        elif mt in ('phi3', 'glm4_moe'):
            self.rot = int(self.D * self.rope[None].get('partial_rotary_factor', 1.0))
        else:
            self.rot = self.D

    def rope_tables(self, pos):
        """cos, sin [T, rot/2] per rope configuration for these positions (times the attention
        factor, as transformers scales cos and sin)."""
        seq_len = int(pos.max()) + 1
        out = {}
        for key, rp in self.rope.items():
            inv, att = rope_init(rp, self.rot, self.cfg.max_position_embeddings, seq_len)
            a = rope_angles(inv, pos)
            out[key] = ((np.cos(a) * att).astype(self.dt), (np.sin(a) * att).astype(self.dt))
        return out

    # --- weights ---

    def w(self, name, index=None):
        return self.ck.get(name, self.dt, index)

    def has(self, name):
        return self.ck.has(name)

    def linear(self, x, name, bias=False):
        y = x @ self.w(name + '.weight').T
        if bias:
            y = y + self.w(name + '.bias')
        return y

    # --- attention ---

    def mask(self, i, qpos, S):
        kpos = np.arange(S)
        ok = kpos[None, :] <= qpos[:, None]
        if self.kinds[i] == 'sliding':
            ok &= kpos[None, :] > qpos[:, None] - self.window
        elif self.kinds[i] == 'chunked':
            ok &= kpos[None, :] // self.window == qpos[:, None] // self.window
        return ok

    def attend(self, i, q, k, v, qpos, scaling, sinks=None):
        """eager_attention_forward: q [B,H,T,D], k/v [B,KV,S,*] (GQA: head h uses kv head h // groups);
        the scores softmax runs in float32 (llama4's in the model dtype), then cast to the dtype."""
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k, v = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)
        s = (q @ k.transpose(0, 1, 3, 2)) * scaling
        s = np.where(self.mask(i, qpos, k.shape[2])[None, None], s, -np.inf)
        if sinks is not None:  # gpt_oss: one extra logit per head that takes probability and is dropped
            sk = np.broadcast_to(sinks[None, :, None, None], s.shape[:3] + (1,))
            p = softmax(np.concatenate([s, sk], -1))[..., :-1]
        else:
            p = softmax(s)
        o = p @ v
        B, H, T, Dv = o.shape
        return o.transpose(0, 2, 1, 3).reshape(B, T, H * Dv)

    def attention(self, i, x, qpos, ropes, cache):
        if self.mla:
            return self.attention_mla(i, x, qpos, ropes, cache)
        c, mt, p = self.cfg, self.mt, 'model.layers.%d.self_attn.' % i
        B, T, _ = x.shape
        H, KV, D = self.H, self.KV, self.D
        if mt == 'phi3':  # fused qkv_proj: [q | k | v] rows
            qkv = self.linear(x, p + 'qkv_proj')
            q, k, v = np.split(qkv, [H * D, H * D + KV * D], -1)
        else:
            # q/k/v biases: always for Qwen2, qkv_bias for Qwen2-MoE, never for Mistral/Mixtral,
            # attention_bias elsewhere (o_proj below has its own rule)
            qkv_bias = {'qwen2': True, 'qwen2_moe': c.get('qkv_bias'), 'mistral': False, 'mixtral': False}
            qb = qkv_bias.get(mt, c.get('attention_bias'))
            q = self.linear(x, p + 'q_proj', qb)
            k = self.linear(x, p + 'k_proj', qb)
            v = self.linear(x, p + 'v_proj', qb)
        q, k, v = q.reshape(B, T, H, D), k.reshape(B, T, KV, D), v.reshape(B, T, KV, D)
        # per-head q/k norms that come before rope
        if mt in ('qwen3', 'qwen3_moe') or (mt == 'glm4_moe' and c.get('use_qk_norm')):
            q = rms_norm(q, self.w(p + 'q_norm.weight'), self.eps)
            k = rms_norm(k, self.w(p + 'k_norm.weight'), self.eps)
        elif self.gemma:
            q = rms_norm_gemma(q, self.w(p + 'q_norm.weight'), self.eps)
            k = rms_norm_gemma(k, self.w(p + 'k_norm.weight'), self.eps)
        scaling = D ** -0.5
        if mt == 'llama4_text':
            if self.use_rope[i]:
                cos, sin = ropes[None]
                q, k = rope_interleaved_llama4(q, cos, sin), rope_interleaved_llama4(k, cos, sin)
                if c.get('use_qk_norm'):  # L2 norm after rope, rope layers only
                    q, k = l2_norm(q, self.eps), l2_norm(k, self.eps)
            elif c.get('attn_temperature_tuning'):
                # NoPE layers: queries scaled by log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1
                # (positions are absolute: the cache length is added), then cast to the model dtype
                scale = np.log1p(np.floor((qpos.astype(np.float32) + 1) / c.floor_scale)) * c.attn_scale + 1
                q = q * scale.astype(self.dt)[None, :, None, None]
        else:
            if self.gemma:  # separate rope per layer type (local base for sliding layers)
                cos, sin = ropes['full_attention' if self.kinds[i] == 'full' else 'sliding_attention']
            else:
                cos, sin = ropes[None]
            q, k = rope_half(q, cos, sin, self.rot), rope_half(k, cos, sin, self.rot)
        if self.gemma:
            scaling = c.query_pre_attn_scalar ** -0.5
        q, k, v = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        if cache is not None:
            k, v = cache.update(i, k, v)
        sinks = self.w(p + 'sinks') if mt == 'gpt_oss' else None
        # Gemma 3 keeps attn_logit_softcapping in its config but its attention never passes it on to
        # eager_attention_forward (Gemma 2 does): transformers 5.17 ignores it, and so does this port.
        o = self.attend(i, q, k, v, qpos, scaling, sinks)
        # o_proj bias: attention_bias where the family's o_proj takes it (not Qwen2/Qwen2-MoE/GLM-4.5)
        o_bias = mt in ('llama', 'qwen3', 'qwen3_moe', 'llama4_text', 'gemma3_text', 'gpt_oss') and c.get('attention_bias')
        return self.linear(o, p + 'o_proj', o_bias)

    def attention_mla(self, i, x, qpos, ropes, cache):
        """Multi-head latent attention (DeepSeek-V3, GLM-4.7-Flash): q (optionally through a LoRA with
        an RMSNorm), a shared compressed kv latent + one shared rope key, expanded per head by
        kv_b_proj. Note: q_a_layernorm and kv_a_layernorm use eps 1e-6 (the RMSNorm default), not
        rms_norm_eps."""
        c, p = self.cfg, 'model.layers.%d.self_attn.' % i
        B, T, _ = x.shape
        H, nope, rope_d, vd, r = self.H, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank
        ab = bool(c.get('attention_bias'))
        if c.get('q_lora_rank') is None:
            q = self.linear(x, p + 'q_proj')
        else:
            qa = rms_norm(self.linear(x, p + 'q_a_proj', ab), self.w(p + 'q_a_layernorm.weight'), 1e-6)
            q = self.linear(qa, p + 'q_b_proj')
        q = q.reshape(B, T, H, nope + rope_d)
        q_pass, q_rot = q[..., :nope], q[..., nope:]
        ckv = self.linear(x, p + 'kv_a_proj_with_mqa', ab)
        kv_lat = rms_norm(ckv[..., :r], self.w(p + 'kv_a_layernorm.weight'), 1e-6)
        k_rot = ckv[..., r:].reshape(B, T, 1, rope_d)
        cos, sin = ropes[None]
        if c.get('rope_interleave', True):
            q_rot, k_rot = rope_interleaved_deepseek(q_rot, cos, sin), rope_interleaved_deepseek(k_rot, cos, sin)
        else:
            q_rot, k_rot = rope_half(q_rot, cos, sin, rope_d), rope_half(k_rot, cos, sin, rope_d)
        kv = (kv_lat @ self.w(p + 'kv_b_proj.weight').T).reshape(B, T, H, nope + vd)
        k_nope, v = kv[..., :nope], kv[..., nope:]
        k = np.concatenate([k_nope, np.broadcast_to(k_rot, (B, T, H, rope_d))], -1)
        q = np.concatenate([q_pass, q_rot], -1)
        q, k, v = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        if cache is not None:
            k, v = cache.update(i, k, v)
        # softmax scale: qk_head_dim^-0.5, times mscale^2 when rope scaling sets mscale_all_dim (YaRN)
        scaling = (nope + rope_d) ** -0.5
        rp = self.rope[None]
        if rp.get('rope_type', 'default') != 'default' and rp.get('mscale_all_dim', 0):
            m = _mscale(float(rp['factor']), rp['mscale_all_dim'])
            scaling = scaling * m * m
        o = self.attend(i, q, k, v, qpos, scaling)
        return self.linear(o, p + 'o_proj', ab)

    # --- feed-forward ---

    def mlp_dense(self, x, p, bias=False):
        return self.linear(self.act(self.linear(x, p + 'gate_proj', bias)) * self.linear(x, p + 'up_proj', bias),
                           p + 'down_proj', bias)

    def expert(self, p, e, x):
        """One routed expert of a softmax/sigmoid-routed MoE; per-expert tensors (published names) or
        transformers 5's fused experts.gate_up_proj [E, 2I, H] ([gate; up]) / experts.down_proj [E, H, I]."""
        if self.has(p + 'experts.%d.gate_proj.weight' % e):
            return self.mlp_dense(x, p + 'experts.%d.' % e)
        if self.has(p + 'experts.%d.w1.weight' % e):  # mixtral: w1 gate, w3 up, w2 down
            q = p + 'experts.%d.' % e
            return self.linear(self.act(self.linear(x, q + 'w1')) * self.linear(x, q + 'w3'), q + 'w2')
        gu = self.w(p + 'experts.gate_up_proj', e)
        g, u = np.split(gu, 2, 0)
        return (self.act(x @ g.T) * (x @ u.T)) @ self.w(p + 'experts.down_proj', e).T

    def moe_apply(self, p, x, idx, wts):
        """sum_k w[t,k] * expert_{idx[t,k]}(x[t]), expert by expert (transformers' loop)."""
        out = np.zeros_like(x)
        for e in np.unique(idx):
            tok, slot = np.nonzero(idx == e)
            out[tok] += self.expert(p, int(e), x[tok]) * wts[tok, slot][:, None]
        return out

    def feed_forward(self, i, x):
        c, mt = self.cfg, self.mt
        B, T, Hd = x.shape
        x2 = x.reshape(B * T, Hd)
        p = 'model.layers.%d.mlp.' % i
        if mt == 'phi3':  # fused gate_up_proj: [gate | up]
            g, u = np.split(self.linear(x2, p + 'gate_up_proj'), 2, -1)
            y = self.linear(u * self.act(g), p + 'down_proj')
        elif mt == 'llama4_text':
            y = self.moe_llama4(i, x2) if i in self.moe_layers else self.mlp_dense(x2, 'model.layers.%d.feed_forward.' % i)
        elif mt == 'mixtral':
            y = self.moe_softmax(i, x2)
        elif mt in ('qwen2_moe', 'qwen3_moe'):
            sparse = (i not in (c.get('mlp_only_layers') or []) and c.num_experts > 0
                      and (i + 1) % c.decoder_sparse_step == 0)
            y = self.moe_softmax(i, x2) if sparse else self.mlp_dense(x2, p)
        elif mt in ('deepseek_v3', 'glm4_moe', 'glm4_moe_lite'):
            if mt == 'glm4_moe_lite':  # transformers reads mlp_layer_types here, not first_k_dense_replace
                lt = c.get('mlp_layer_types') or ['dense'] + ['sparse'] * (self.L - 1)
                sparse = lt[i] == 'sparse'
            else:
                sparse = i >= c.first_k_dense_replace
            y = self.moe_sigmoid_groups(i, x2) if sparse else self.mlp_dense(x2, p)
        elif mt == 'gpt_oss':
            y = self.moe_gpt_oss(i, x2)
        else:
            y = self.mlp_dense(x2, p, mt == 'llama' and bool(c.get('mlp_bias')))
        return y.reshape(B, T, Hd)

    def moe_softmax(self, i, x):
        """Mixtral / Qwen2-MoE / Qwen3-MoE: softmax over all router logits (float32), top-k,
        renormalised (Mixtral always, Qwen when norm_topk_prob). Qwen2-MoE adds a shared expert
        gated by sigmoid(shared_expert_gate(x)). The router logits are a model-dtype matmul."""
        c, mt = self.cfg, self.mt
        p = 'model.layers.%d.%s.' % (i, 'block_sparse_moe' if mt == 'mixtral' and
                                     self.has('model.layers.%d.block_sparse_moe.gate.weight' % i) else 'mlp')
        n = c.num_local_experts if mt == 'mixtral' else c.num_experts
        probs = softmax(x @ self.w(p + 'gate.weight').T)
        if probs.shape[-1] != n:
            raise RefError('%sgate.weight has %d rows, config says %d experts' % (p, probs.shape[-1], n))
        idx = topk(probs, c.num_experts_per_tok)
        wts = np.take_along_axis(probs, idx, -1)
        if mt == 'mixtral' or c.get('norm_topk_prob'):
            wts = wts / wts.sum(-1, keepdims=True)
        out = self.moe_apply(p, x, idx, wts)
        if mt == 'qwen2_moe':
            shared = self.mlp_dense(x, p + 'shared_expert.')
            out = out + sigmoid(x @ self.w(p + 'shared_expert_gate.weight').T) * shared
        return out

    def moe_llama4(self, i, x):
        """Llama 4: top-k on the raw router logits; sigmoid of the chosen logits scales the expert's
        INPUT (not its output); experts fused as gate_up_proj [E, H, 2I] ([gate | up] columns) and
        down_proj [E, I, H] (x @ W, no transpose); plus a shared expert on the unscaled input.
        transformers: router logits in the model dtype, sigmoid in float32 cast back."""
        c, p = self.cfg, 'model.layers.%d.feed_forward.' % i
        logits = x @ self.w(p + 'router.weight').T
        idx = topk(logits, c.num_experts_per_tok)
        score = sigmoid(np.take_along_axis(logits, idx, -1))
        out = self.mlp_dense(x, p + 'shared_expert.')
        for e in np.unique(idx):
            tok, slot = np.nonzero(idx == e)
            xin = x[tok] * score[tok, slot][:, None]
            g, u = np.split(xin @ self.w(p + 'experts.gate_up_proj', int(e)), 2, -1)
            out[tok] += (u * self.act(g)) @ self.w(p + 'experts.down_proj', int(e))
        return out

    def moe_sigmoid_groups(self, i, x):
        """DeepSeek-V3 / GLM-4.5 / GLM-4.7-Flash router, all in float32 in transformers (the hidden
        state and the router weight are cast up): sigmoid scores; choice = score + e_score_correction_bias;
        keep the topk_group groups with the largest sum of their top-2 choices; top-k among those;
        weights = the chosen scores *without* the bias, divided by their sum (+1e-20) when
        norm_topk_prob, times routed_scaling_factor. Shared experts (one MLP of width
        moe_intermediate_size * n_shared_experts) on top."""
        c, p = self.cfg, 'model.layers.%d.mlp.' % i
        n, g = c.n_routed_experts, c.get('n_group') or 1
        scores = sigmoid(x.astype(np.float32 if self.dt == np.float32 else self.dt) @ self.w(p + 'gate.weight').T)
        bias = self.w(p + 'gate.e_score_correction_bias') if self.has(p + 'gate.e_score_correction_bias') else 0
        choice = scores + bias
        grouped = choice.reshape(-1, g, n // g)
        group_score = np.sort(grouped, -1)[..., -2:].sum(-1)
        keep = np.zeros_like(group_score, dtype=bool)
        np.put_along_axis(keep, topk(group_score, c.topk_group), True, -1)
        choice = np.where(np.repeat(keep, n // g, -1), choice, -np.inf)
        idx = topk(choice, c.num_experts_per_tok)
        wts = np.take_along_axis(scores, idx, -1)
        if c.get('norm_topk_prob'):
            wts = wts / (wts.sum(-1, keepdims=True) + 1e-20)
        wts = wts * c.routed_scaling_factor
        return self.moe_apply(p, x, idx, wts) + self.mlp_dense(x, p + 'shared_experts.')

    def moe_gpt_oss(self, i, x):
        """gpt-oss: router with bias, top-k on logits, softmax over the k chosen; experts with biases,
        gate_up_proj [E, H, 2I] interleaved (gate = even columns, up = odd), clamped SwiGLU:
        gate <= 7, -7 <= up <= 7, (up + 1) * gate * sigmoid(1.702 gate)."""
        c, p = self.cfg, 'model.layers.%d.mlp.' % i
        logits = self.linear(x, p + 'router', True)
        idx = topk(logits, c.num_experts_per_tok)
        wts = softmax(np.take_along_axis(logits, idx, -1))
        out = np.zeros_like(x)
        for e in np.unique(idx):
            e = int(e)
            tok, slot = np.nonzero(idx == e)
            gu = x[tok] @ self.w(p + 'experts.gate_up_proj', e) + self.w(p + 'experts.gate_up_proj_bias', e)
            gate, up = np.minimum(gu[:, 0::2], 7.0), np.clip(gu[:, 1::2], -7.0, 7.0)
            h = (up + 1) * gate * sigmoid(gate * 1.702)
            y = h @ self.w(p + 'experts.down_proj', e) + self.w(p + 'experts.down_proj_bias', e)
            out[tok] += y * wts[tok, slot][:, None]
        return out

    # --- the whole model ---

    def forward(self, ids, cache=None):
        """Logits [B, T, vocab] for token ids [B, T]; with a cache, the ids continue the cached ones."""
        c = self.cfg
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.size == 0:
            raise RefError('ids must be a non-empty [batch, seq] array')
        if ids.min() < 0 or ids.max() >= c.vocab_size:
            raise RefError('token id out of range [0, %d)' % c.vocab_size)
        B, T = ids.shape
        past = cache.length if cache is not None else 0
        qpos = np.arange(past, past + T)
        x = self.w('model.embed_tokens.weight', ids.reshape(-1)).reshape(B, T, -1)
        if self.gemma:
            # Gemma3TextScaledWordEmbedding: times sqrt(hidden_size) cast to the *weight dtype*: in a
            # bf16 model that is bf16(sqrt(hidden)) (e.g. 73.5 for 5376, not 73.32); float32 here.
            x = x * np.asarray(c.hidden_size ** 0.5, dtype=self.dt)
        ropes = self.rope_tables(qpos)
        for i in range(self.L):
            p = 'model.layers.%d.' % i
            if self.gemma:  # sandwich norms: the attention/MLP outputs are normed before the residual add
                h = self.attention(i, rms_norm_gemma(x, self.w(p + 'input_layernorm.weight'), self.eps), qpos, ropes, cache)
                x = x + rms_norm_gemma(h, self.w(p + 'post_attention_layernorm.weight'), self.eps)
                h = self.feed_forward(i, rms_norm_gemma(x, self.w(p + 'pre_feedforward_layernorm.weight'), self.eps))
                x = x + rms_norm_gemma(h, self.w(p + 'post_feedforward_layernorm.weight'), self.eps)
            else:
                x = x + self.attention(i, rms_norm(x, self.w(p + 'input_layernorm.weight'), self.eps), qpos, ropes, cache)
                x = x + self.feed_forward(i, rms_norm(x, self.w(p + 'post_attention_layernorm.weight'), self.eps))
        norm = rms_norm_gemma if self.gemma else rms_norm
        x = norm(x, self.w('model.norm.weight'), self.eps)
        head = 'lm_head.weight'
        if c.get('tie_word_embeddings') or not self.has(head):
            head = 'model.embed_tokens.weight'
        logits = self.lm_head(x.reshape(B * T, -1), head).reshape(B, T, -1)
        if self.gemma and c.get('final_logit_softcapping') and not c.wrapper:
            # Gemma3ForCausalLM caps the logits; Gemma3ForConditionalGeneration's forward does not
            cap = c.final_logit_softcapping
            logits = np.tanh(logits / cap) * cap
        if cache is not None:
            cache.length += T
        return logits

    def lm_head(self, x, name, rows=32768):
        """x @ W.T in slices of the vocabulary, so a big head is never converted whole."""
        V = self.ck.shape(name)[0]
        out = np.empty((x.shape[0], V), dtype=self.dt)
        for a in range(0, V, rows):
            out[:, a:a + rows] = x @ self.w(name, slice(a, a + rows)).T
        return out


def run(model, ids, decode_from=None):
    """Full-sequence logits, or prefill of decode_from positions then one token at a time."""
    ids = np.asarray(ids, dtype=np.int64)
    if decode_from is None:
        return model.forward(ids)
    if not 0 < decode_from <= ids.shape[1]:
        raise RefError('--decode-from must be in 1..%d' % ids.shape[1])
    cache = Cache()
    parts = [model.forward(ids[:, :decode_from], cache)]
    for t in range(decode_from, ids.shape[1]):
        parts.append(model.forward(ids[:, t:t + 1], cache))
    return np.concatenate(parts, 1)


def load_ids(path):
    try:
        j = json.load(open(path))
    except OSError as e:
        raise RefError('%s: %s' % (path, e))
    except ValueError as e:
        raise RefError('%s: not JSON (%s)' % (path, e))
    if isinstance(j, dict):
        j = j.get('ids')
    if isinstance(j, list) and j and all(isinstance(t, int) for t in j):
        j = [j]
    if (not isinstance(j, list) or not j or not all(isinstance(r, list) and r for r in j)
            or len({len(r) for r in j}) != 1 or not all(isinstance(t, int) and not isinstance(t, bool) for r in j for t in r)):
        raise RefError('%s: expected {"ids": [[int, ...], ...]} with rows of equal length' % path)
    return np.asarray(j, dtype=np.int64)


def legacy_spelling(raw):
    """A transformers-5 config.json rewritten the way published pre-v5 configs spell it: rope_theta and
    rope_scaling (old key "type") instead of rope_parameters, gemma3's rope_local_base_freq and
    sliding_window_pattern instead of per-layer-type rope_parameters and layer_types, torch_dtype
    instead of dtype. The fixtures check that both spellings give the same logits."""
    def conv(c):
        c = dict(c)
        if 'dtype' in c:
            c['torch_dtype'] = c.pop('dtype')
        rp = c.pop('rope_parameters', None)
        if isinstance(rp, dict) and c.get('model_type') == 'gemma3_text':
            full = dict(rp['full_attention'])
            c['rope_theta'] = full.pop('rope_theta')
            c['rope_local_base_freq'] = rp['sliding_attention']['rope_theta']
            c['rope_scaling'] = full if full.get('rope_type', 'default') != 'default' else None
            c.pop('layer_types', None)
            c.pop('_sliding_window_pattern', None)
        elif isinstance(rp, dict):
            rp = dict(rp)
            c['rope_theta'] = rp.pop('rope_theta')
            if 'partial_rotary_factor' in rp:
                c['partial_rotary_factor'] = rp.pop('partial_rotary_factor')
            kind = rp.pop('rope_type', rp.pop('type', 'default'))
            rp.pop('type', None)
            c['rope_scaling'] = dict(rp, type=kind) if kind != 'default' else None
        if isinstance(c.get('text_config'), dict):
            c['text_config'] = conv(c['text_config'])
        return c
    return conv(raw)


def rel_err(a, ref):
    return float(np.max(np.abs(a.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def check_fixtures(root, tol, dt):
    """Every fixture folder: full-sequence logits against logits.npy, and where present the KV-cache
    path (40-token prefill of row 0, then positions 40..47 one by one) against logits_incremental.npy."""
    names = sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, 'config.json')))
    if not names:
        print('no fixtures under %s' % root)
        return 1
    bad = 0
    print('%-22s %-14s %10s %10s %10s  %s' % ('fixture', 'model_type', 'full', 'old-spell', 'incremental', 'result'))
    for name in names:
        d = os.path.join(root, name)
        try:
            m = Model(d, dt)
            ids = load_ids(os.path.join(d, 'ids.json'))
            ref = np.load(os.path.join(d, 'logits.npy'))
            got = m.forward(ids)
            if got.shape != ref.shape:
                raise RefError('logits shape %s, fixture %s' % (got.shape, ref.shape))
            e_full = rel_err(got, ref)
            e_old = rel_err(Model(d, dt, legacy_spelling(m.raw)).forward(ids), ref)
            e_inc = None
            inc = os.path.join(d, 'logits_incremental.npy')
            if os.path.exists(inc):
                ref_inc = np.load(inc)
                n = ref_inc.shape[0]
                start = ids.shape[1] - n
                got_inc = run(m, ids[:1], start)[0, start:]
                e_inc = rel_err(got_inc, ref_inc)
            ok = e_full <= tol and e_old <= tol and (e_inc is None or e_inc <= tol)
            bad += not ok
            print('%-22s %-14s %10.3e %10.3e %10s  %s' % (name, m.mt, e_full, e_old, '-' if e_inc is None else
                                                          '%.3e' % e_inc, 'ok' if ok else 'MISMATCH (tol %g)' % tol),
                  flush=True)
        except RefError as e:
            bad += 1
            print('%-22s error: %s' % (name, e), flush=True)
    print('%d fixtures, %d failed' % (len(names), bad))
    return 1 if bad else 0


def main(argv):
    import argparse
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('model_dir', nargs='?', help='Hugging Face checkpoint directory (config.json + *.safetensors)')
    ap.add_argument('--ids', help='JSON token ids: {"ids": [[...], ...]}')
    ap.add_argument('--out', help='where to write the logits (.npy, float32 [batch, seq, vocab])')
    ap.add_argument('--decode-from', type=int, help='prefill this many positions, then decode one token at a time')
    ap.add_argument('--f64', action='store_true', help='compute in float64 instead of float32')
    ap.add_argument('--check-fixtures', nargs='?', const=os.path.join(here, '..', 'fixtures', 'arch'),
                    metavar='DIR', help='compare against every fixture under DIR (default tests/fixtures/arch)')
    ap.add_argument('--tol', type=float, default=1e-4, help='max |diff| / max |logit| allowed (default 1e-4)')
    a = ap.parse_args(argv)
    dt = np.float64 if a.f64 else np.float32
    try:
        if a.check_fixtures:
            return check_fixtures(a.check_fixtures, a.tol, dt)
        if not (a.model_dir and a.ids and a.out):
            ap.error('give MODEL_DIR --ids IDS.json --out LOGITS.npy, or --check-fixtures')
        logits = run(Model(a.model_dir, dt), load_ids(a.ids), a.decode_from).astype(np.float32)
        tmp = a.out + '.tmp.npy'  # written whole, then renamed: no half-written output
        np.save(tmp, logits)
        os.replace(tmp, a.out)
        print('%s: logits %s' % (a.out, list(logits.shape)))
        return 0
    except RefError as e:
        print('ref.py: %s' % e, file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
