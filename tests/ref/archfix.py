#!/usr/bin/env python3
"""Ground-truth fixtures for model families, made by Hugging Face transformers itself.

Needs a Python with torch + transformers (a machine where they are installed: CI has neither, so
the fixtures this makes are committed under tests/fixtures/arch/). Derived from ../shared/tools/
archfix.py with specs that use every feature the engine implements: NoPE layers, chunked attention
and temperature tuning (llama4), shared experts (qwen2_moe, glm4_moe, deepseek_v3), group-limited
sigmoid routing, multi-head latent attention with and without a q LoRA, YaRN, partial rotary,
LongRoPE (both factor sets), sliding/global layer patterns (gemma3), activations and MLP biases,
and a block-FP8 checkpoint (DeepSeek-V3's published format) with the logits of its dequantized
weights.

Each family: tiny random model, norms moved away from 1, saved with save_pretrained (bf16
safetensors), reloaded from disk in float32 with eager attention, logits on fixed ids.
Output: $OUT/archfix.tar.gz with one folder per spec: config.json, model.safetensors, ids.json,
logits.npy [batch, seq, vocab] float32, keys.txt, and summary.json (versions, load info)."""
import json, os, sys, time, tarfile, traceback, copy
import numpy as np, torch
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
import transformers as T
OUT = os.environ.get('OUT', '/tmp/out'); W = '/tmp/archfix'; os.makedirs(W, exist_ok=True); os.makedirs(OUT, exist_ok=True)
print('transformers', T.__version__, 'torch', torch.__version__, flush=True)
V = 512
common = dict(vocab_size=V, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
              pad_token_id=0, bos_token_id=1, eos_token_id=2,
              max_position_embeddings=512, initializer_range=0.08, tie_word_embeddings=False)
hd16 = 8  # half of head_dim 16 (longrope factor lists)
specs = {
 # Llama 4 text: NoPE every 4th layer, chunked attention (chunk 32 < 48 tokens), L2 QK-norm, temperature
 # tuning switched on early (floor_scale 8), llama3 rope scaling, MoE every 2nd layer with a shared expert.
 'llama4_text': ('Llama4TextConfig', dict(common, intermediate_size=64, intermediate_size_mlp=128, num_hidden_layers=4,
                 head_dim=16, num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2,
                 attention_chunk_size=32, use_qk_norm=True, no_rope_layers=[1, 1, 1, 0],
                 attn_temperature_tuning=True, floor_scale=8, attn_scale=0.1, rope_theta=500000.0,
                 rope_scaling=dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                   original_max_position_embeddings=64))),
 'qwen2_moe': ('Qwen2MoeConfig', dict(common, intermediate_size=128, moe_intermediate_size=32,
               shared_expert_intermediate_size=64, num_experts=8, num_experts_per_tok=2, num_hidden_layers=4,
               decoder_sparse_step=1, mlp_only_layers=[0], norm_topk_prob=False)),
 'glm4_moe': ('Glm4MoeConfig', dict(common, intermediate_size=128, moe_intermediate_size=32, n_routed_experts=8,
              n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, num_hidden_layers=3, head_dim=16,
              partial_rotary_factor=0.5, n_group=2, topk_group=1, use_qk_norm=True, routed_scaling_factor=1.5,
              attention_bias=True, norm_topk_prob=True)),
 'glm4_moe_lite': ('Glm4MoeLiteConfig', dict(common, intermediate_size=128, moe_intermediate_size=32, n_routed_experts=8,
              n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, num_hidden_layers=3,
              q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
              num_key_value_heads=4, n_group=2, topk_group=1, routed_scaling_factor=1.8)),
 'deepseek_v3': ('DeepseekV3Config', dict(common, intermediate_size=128, moe_intermediate_size=32, n_routed_experts=8,
                 n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, num_hidden_layers=3,
                 q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                 num_key_value_heads=4, n_group=2, topk_group=1, routed_scaling_factor=2.5,
                 rope_scaling=dict(type='yarn', factor=4.0, original_max_position_embeddings=128, beta_fast=32,
                                   beta_slow=1, mscale=1.0, mscale_all_dim=1.0))),
 'deepseek_v3_noqlora': ('DeepseekV3Config', dict(common, intermediate_size=128, moe_intermediate_size=32,
                 n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3, first_k_dense_replace=2,
                 num_hidden_layers=3, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
                 v_head_dim=24, num_key_value_heads=4, n_group=4, topk_group=2, routed_scaling_factor=1.0,
                 norm_topk_prob=False)),
 'gemma3_text': ('Gemma3TextConfig', dict(common, intermediate_size=128, num_hidden_layers=4, head_dim=16,
                 sliding_window=16, sliding_window_pattern=2,
                 layer_types=['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention'],
                 rope_scaling=dict(rope_type='linear', factor=8.0), rope_local_base_freq=10000.0,
                 rope_theta=1000000.0, tie_word_embeddings=True, query_pre_attn_scalar=32)),
 'phi3': ('Phi3Config', dict(common, intermediate_size=128, num_hidden_layers=2, rope_theta=250000.0)),
 'phi3_longrope': ('Phi3Config', dict(common, intermediate_size=128, num_hidden_layers=2, partial_rotary_factor=0.75,
                   original_max_position_embeddings=32,
                   rope_scaling=dict(type='longrope', short_factor=[1.0 + 0.1 * i for i in range(6)],
                                     long_factor=[1.5 + 0.7 * i for i in range(6)]))),
 'phi3_longrope_short': ('Phi3Config', dict(common, intermediate_size=128, num_hidden_layers=2,
                   original_max_position_embeddings=64,
                   rope_scaling=dict(type='longrope', short_factor=[1.0 + 0.2 * i for i in range(hd16)],
                                     long_factor=[2.0 + 0.5 * i for i in range(hd16)]))),
 'llama_ext': ('LlamaConfig', dict(common, intermediate_size=128, num_hidden_layers=2, mlp_bias=True,
               attention_bias=True, hidden_act='gelu')),
 'llama_tanh': ('LlamaConfig', dict(common, intermediate_size=128, num_hidden_layers=2, hidden_act='gelu_pytorch_tanh',
                rope_scaling=dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=64))),
 'mistral': ('MistralConfig', dict(common, intermediate_size=128, num_hidden_layers=2, sliding_window=16)),
 'qwen2': ('Qwen2Config', dict(common, intermediate_size=128, num_hidden_layers=2)),
 'qwen3': ('Qwen3Config', dict(common, intermediate_size=128, num_hidden_layers=2, head_dim=16)),
 'mixtral': ('MixtralConfig', dict(common, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2,
             num_hidden_layers=2)),
 'qwen3_moe': ('Qwen3MoeConfig', dict(common, intermediate_size=128, moe_intermediate_size=32, num_experts=8,
               num_experts_per_tok=2, num_hidden_layers=2, head_dim=16, norm_topk_prob=True)),
 'gpt_oss': ('GptOssConfig', dict(common, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2,
             num_hidden_layers=2, head_dim=16, sliding_window=16)),
}
# Multimodal wrappers: the published Llama-4 and Gemma-3 checkpoints are ...ForConditionalGeneration
# (text tensors under language_model.); tiny vision towers, text-only logits.
mm_specs = {
 'llama4_mm': ('Llama4Config', 'llama4_text', dict(vision_config=dict(hidden_size=32, num_hidden_layers=1,
               num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14, vision_output_dim=32,
               projector_input_dim=32, projector_output_dim=32, pixel_shuffle_ratio=0.5)),
               ['Llama4ForConditionalGeneration']),
 'gemma3_mm': ('Gemma3Config', 'gemma3_text', dict(vision_config=dict(model_type='siglip_vision_model', hidden_size=32,
               num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14),
               mm_tokens_per_image=4), ['Gemma3ForConditionalGeneration']),
}
rng = np.random.default_rng(7)
ids = [rng.integers(3, V, 48).tolist(), rng.integers(3, V, 48).tolist()]
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
summary = {'transformers': T.__version__, 'torch': torch.__version__}


def make_config(cls, kw):
    """transformers 5 moved rope_theta/rope_scaling into rope_parameters; try the old spelling first."""
    try:
        return getattr(T, cls)(**kw)
    except Exception as e1:
        kw2 = dict(kw)
        rs = kw2.pop('rope_scaling', None)
        rp = dict(rs or {})
        if 'type' in rp: rp['rope_type'] = rp.pop('type')
        rp.setdefault('rope_type', 'default')
        if 'rope_theta' in kw2: rp['rope_theta'] = kw2.pop('rope_theta')
        kw2['rope_parameters'] = rp
        print('  retry with rope_parameters after', repr(e1)[:200], flush=True)
        return getattr(T, cls)(**kw2)


def perturb(m):
    with torch.no_grad():   # norms and biases away from 1/0 so that a wrong convention shows
        for n, p in m.named_parameters():
            if p.dim() == 1: p.add_(torch.randn_like(p) * 0.1)


def keys_of(d):
    from safetensors import safe_open
    keys = []
    for f in sorted(os.listdir(d)):
        if f.endswith('.safetensors'):
            with safe_open(os.path.join(d, f), 'pt') as g:
                keys += ['%s %s %s' % (k, g.get_slice(k).get_dtype(), list(g.get_slice(k).get_shape())) for k in g.keys()]
    open(os.path.join(d, 'keys.txt'), 'w').write('\n'.join(sorted(keys)) + '\n')
    return keys


def logits_of(m2):
    with torch.no_grad():
        return m2(input_ids=torch.tensor(ids, device=dev)).logits.float().cpu().numpy()


def finish(name, d, m2, info, t0, loader):
    lg = logits_of(m2)
    np.save(os.path.join(d, 'logits.npy'), lg.astype(np.float32))
    json.dump({'ids': ids}, open(os.path.join(d, 'ids.json'), 'w'))
    keys = keys_of(d)
    summary[name] = dict(ok=True, arch=type(m2).__name__, loader=loader, tensors=len(keys),
                         params=sum(p.numel() for p in m2.parameters()),
                         missing=info.get('missing_keys') if info else None,
                         unexpected=info.get('unexpected_keys') if info else None,
                         logits_std=float(lg.std()), seconds=round(time.time() - t0, 2))
    return lg


models = {}
for name, (cls, kw) in specs.items():
    t0 = time.time(); d = os.path.join(W, name)
    try:
        torch.manual_seed(0)
        cfg = make_config(cls, copy.deepcopy(kw))
        m = T.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        perturb(m)
        m = m.to(torch.bfloat16)
        m.save_pretrained(d, safe_serialization=True)
        m2, info = T.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation='eager',
                                                          output_loading_info=True)
        m2 = m2.to(dev).eval()
        finish(name, d, m2, info, t0, 'AutoModelForCausalLM')
        models[name] = m2
    except Exception as e:
        traceback.print_exc(); summary[name] = dict(ok=False, error=repr(e)[:800])
    print(name, json.dumps(summary[name], default=str)[:600], flush=True)

for name, (cls, text_name, extra, archs) in mm_specs.items():
    t0 = time.time(); d = os.path.join(W, name)
    try:
        torch.manual_seed(0)
        tcls, tkw = specs[text_name]
        tcfg = make_config(tcls, copy.deepcopy(tkw))
        cfg = getattr(T, cls)(text_config=tcfg.to_dict(), **copy.deepcopy(extra))
        mcls = getattr(T, archs[0])
        m = mcls(cfg).to(torch.float32)
        perturb(m)
        m = m.to(torch.bfloat16)
        m.save_pretrained(d, safe_serialization=True)
        m2, info = mcls.from_pretrained(d, dtype=torch.float32, attn_implementation='eager', output_loading_info=True)
        m2 = m2.to(dev).eval()
        finish(name, d, m2, info, t0, archs[0])
    except Exception as e:
        traceback.print_exc(); summary[name] = dict(ok=False, error=repr(e)[:800])
    print(name, json.dumps(summary[name], default=str)[:600], flush=True)

# DeepSeek-V3's published format: projection weights in float8_e4m3fn with one float32 scale per
# block (`<name>_scale_inv`, W = q * scale_inv); embeddings, router, norms stay bf16. Blocks 32x32 here
# (shapes 64, 40, 96: full and partial blocks); logits of the dequantized weights.
try:
    t0 = time.time(); src = os.path.join(W, 'deepseek_v3'); d = os.path.join(W, 'deepseek_v3_fp8')
    from safetensors.torch import load_file, save_file
    sd = load_file(os.path.join(src, 'model.safetensors'))
    B = 32
    out = {}; deq = {}
    for k, v in sd.items():
        fp8 = (v.dim() == 2 and k.endswith('.weight') and '.layers.' in k and 'layernorm' not in k and 'norm.' not in k
               and not k.endswith('mlp.gate.weight'))
        if not fp8:
            out[k] = v; continue
        w = v.float(); R, C = w.shape
        nr, nc = (R + B - 1) // B, (C + B - 1) // B
        s = torch.zeros(nr, nc); q = torch.zeros(R, C, dtype=torch.float8_e4m3fn); dq = torch.zeros(R, C)
        for i in range(nr):
            for j in range(nc):
                blk = w[i*B:(i+1)*B, j*B:(j+1)*B]
                sc = float(blk.abs().max()) / 448.0
                if sc == 0: sc = 1.0
                qb = (blk / sc).to(torch.float8_e4m3fn)
                q[i*B:(i+1)*B, j*B:(j+1)*B] = qb
                dq[i*B:(i+1)*B, j*B:(j+1)*B] = qb.float() * sc
                s[i, j] = sc
        out[k] = q; out[k + '_scale_inv'] = s.float(); deq[k] = dq
    os.makedirs(d, exist_ok=True)
    save_file(out, os.path.join(d, 'model.safetensors'), metadata={'format': 'pt'})
    cfg = json.load(open(os.path.join(src, 'config.json')))
    cfg['quantization_config'] = {'activation_scheme': 'dynamic', 'fmt': 'e4m3', 'quant_method': 'fp8',
                                  'weight_block_size': [B, B]}
    json.dump(cfg, open(os.path.join(d, 'config.json'), 'w'), indent=2)
    # the dequantized weights as a float32 checkpoint of the published (per-expert) naming, loaded by
    # transformers with its own conversions
    dq_dir = os.path.join('/tmp', 'deepseek_v3_deq'); os.makedirs(dq_dir, exist_ok=True)
    full = {k: (deq[k] if k in deq else v.float()) for k, v in sd.items()}
    save_file(full, os.path.join(dq_dir, 'model.safetensors'), metadata={'format': 'pt'})
    json.dump(json.load(open(os.path.join(src, 'config.json'))), open(os.path.join(dq_dir, 'config.json'), 'w'))
    m2, info = T.AutoModelForCausalLM.from_pretrained(dq_dir, dtype=torch.float32, attn_implementation='eager',
                                                      output_loading_info=True)
    n_set = len(deq) if not info.get('missing_keys') and not info.get('unexpected_keys') else -1
    m2 = m2.eval()
    m2 = m2.to(dev)
    lg = logits_of(m2)
    np.save(os.path.join(d, 'logits.npy'), lg.astype(np.float32))
    json.dump({'ids': ids}, open(os.path.join(d, 'ids.json'), 'w'))
    keys = keys_of(d)
    summary['deepseek_v3_fp8'] = dict(ok=n_set == len(deq), fp8_tensors=len(deq), set_in_model=n_set,
                                      logits_std=float(lg.std()), seconds=round(time.time() - t0, 2))
except Exception as e:
    traceback.print_exc(); summary['deepseek_v3_fp8'] = dict(ok=False, error=repr(e)[:800])
print('deepseek_v3_fp8', json.dumps(summary.get('deepseek_v3_fp8'), default=str)[:600], flush=True)

# Incremental decoding with the KV cache (phi3 longrope switches factor sets with the sequence length;
# the engine runs token by token in generate): logits of the last token after feeding ids one by one.
for name in ['llama4_text', 'gemma3_text', 'deepseek_v3', 'phi3_longrope']:
    try:
        m2 = models.get(name)
        if m2 is None: continue
        with torch.no_grad():
            out = m2(input_ids=torch.tensor([ids[0][:40]], device=dev), use_cache=True)
            pkv = out.past_key_values; steps = []
            for t in range(40, 48):
                o = m2(input_ids=torch.tensor([[ids[0][t]]], device=dev), past_key_values=pkv, use_cache=True)
                pkv = o.past_key_values; steps.append(o.logits[0, -1].float().cpu().numpy())
        np.save(os.path.join(W, name, 'logits_incremental.npy'), np.stack(steps).astype(np.float32))
        summary[name]['incremental'] = 'positions 40..47 after a 40-token prefill'
    except Exception as e:
        traceback.print_exc(); summary.setdefault(name, {})['incremental_error'] = repr(e)[:300]

json.dump(summary, open(os.path.join(W, 'summary.json'), 'w'), indent=1, default=str)
# The modeling files, for reading the exact code that made the fixtures.
try:
    import inspect
    mods = {}
    for mod in ['llama4', 'qwen2_moe', 'glm4_moe', 'glm4_moe_lite', 'deepseek_v3', 'gemma3', 'phi3', 'gpt_oss',
                'llama', 'mistral', 'qwen3_moe', 'mixtral']:
        try:
            mm = __import__('transformers.models.%s.modeling_%s' % (mod, mod), fromlist=['x'])
            cm = __import__('transformers.models.%s.configuration_%s' % (mod, mod), fromlist=['x'])
            os.makedirs(os.path.join(W, 'src'), exist_ok=True)
            open(os.path.join(W, 'src', 'modeling_%s.py' % mod), 'w').write(inspect.getsource(mm))
            open(os.path.join(W, 'src', 'configuration_%s.py' % mod), 'w').write(inspect.getsource(cm))
        except Exception as e:
            print('src', mod, repr(e)[:200])
    for extra in ['transformers.modeling_rope_utils', 'transformers.integrations.finegrained_fp8',
                  'transformers.activations', 'transformers.conversion_mapping']:
        try:
            mm = __import__(extra, fromlist=['x'])
            open(os.path.join(W, 'src', extra.split('.')[-1] + '.py'), 'w').write(inspect.getsource(mm))
        except Exception as e:
            print('src', extra, repr(e)[:200])
except Exception as e:
    print('src dump failed', e)
with tarfile.open(os.path.join(OUT, 'archfix.tar.gz'), 'w:gz') as tf:
    tf.add(W, arcname='archfix')
print(json.dumps({k: (v.get('ok') if isinstance(v, dict) else v) for k, v in summary.items()}), flush=True)
print('done', flush=True)
