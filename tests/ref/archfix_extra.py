#!/usr/bin/env python3
"""Three more ground-truth fixtures made by transformers itself (needs torch + transformers; run on a
machine that has them, like archfix.py). Same method as archfix.py (tiny random model, 1-D
parameters moved away from 1/0, saved in bf16, reloaded in float32 with eager attention, logits on the
same ids), for what the first set leaves at its defaults:

- deepseek_v3_bias: a non-zero e_score_correction_bias (a buffer, which archfix.py's perturbation of
  parameters left at 0, so the router's use of it was untested), rms_norm_eps 1e-5 (the MLA
  q_a/kv_a norms keep eps 1e-6), YaRN with mscale != mscale_all_dim (attention factor != 1);
- gemma3_softcap: final_logit_softcapping and attn_logit_softcapping set (transformers 5.17 applies
  the first and ignores the second), layer pattern from sliding_window_pattern;
- llama4_scout_style: Llama-4-Scout's layout: MoE in every layer (interleave_moe_layer_step 1),
  default no_rope_layers, llama3 rope with high_freq_factor == low_freq_factor.

Each config.json is then rewritten in the pre-v5 spelling (rope_theta, rope_scaling with "type",
rope_local_base_freq, sliding_window_pattern without layer_types, torch_dtype) and the model is
reloaded from it, so transformers itself reads the old spelling. For llama4_scout_style the published
Scout config's "attn_temperature_tuning": 4 and "no_rope_layers": [] were written too; transformers
5.17 refuses the int 4 for its bool field, so that folder keeps the config transformers saved (the
summary records the error).

Output: $OUT/x.tar.gz with one folder per spec and summary.json (what transformers built). keys.txt
was added afterwards with ref.py's safetensors reader. This is the script that made the committed
folders (it was sent to the machine compressed, hence the terse style of the original; same code)."""
import json
import os
import shutil

import numpy as np
import torch
import transformers as T

O = os.environ['OUT']
W = '/tmp/x'
r = np.random.default_rng(7)
I = [r.integers(3, 512, 48).tolist() for _ in 'ab']  # the ids of archfix.py
C = dict(vocab_size=512, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
         initializer_range=0.08, tie_word_embeddings=False, intermediate_size=128)
S = {
    'deepseek_v3_bias': ('DeepseekV3', dict(
        moe_intermediate_size=32, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
        first_k_dense_replace=1, num_hidden_layers=3, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16,
        qk_rope_head_dim=8, v_head_dim=16, num_key_value_heads=4, rms_norm_eps=1e-5, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, rope_scaling=dict(type='yarn', factor=4.0, original_max_position_embeddings=128,
                                                     beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=1.0))),
    'gemma3_softcap': ('Gemma3Text', dict(
        num_hidden_layers=4, head_dim=16, sliding_window=16, sliding_window_pattern=2, final_logit_softcapping=3.0,
        attn_logit_softcapping=5.0, rope_scaling=dict(rope_type='linear', factor=8.0), rope_local_base_freq=1e4,
        rope_theta=1e6, tie_word_embeddings=True, query_pre_attn_scalar=32)),
    'llama4_scout_style': ('Llama4Text', dict(
        intermediate_size=64, intermediate_size_mlp=128, num_hidden_layers=4, head_dim=16, num_local_experts=4,
        attention_chunk_size=32, floor_scale=8, rope_theta=5e5,
        rope_scaling=dict(rope_type='llama3', factor=16.0, low_freq_factor=1.0, high_freq_factor=1.0,
                          original_max_position_embeddings=64))),
}


def L(c):
    """The saved config in the pre-v5 spelling."""
    c = dict(c)
    c['torch_dtype'] = c.pop('dtype')
    p = c.pop('rope_parameters')
    t = c['model_type']
    if t == 'gemma3_text':
        f = dict(p['full_attention'])
        c['rope_theta'] = f.pop('rope_theta')
        c['rope_local_base_freq'] = p['sliding_attention']['rope_theta']
        c['rope_scaling'] = f
        c.pop('layer_types')
        c.pop('_sliding_window_pattern', 0)
    else:
        p = dict(p)
        c['rope_theta'] = p.pop('rope_theta')
        p.pop('partial_rotary_factor', 0)
        k = p.pop('rope_type')
        p.pop('type', 0)
        c['rope_scaling'] = dict(p, type=k) if k != 'default' else None
    if t == 'llama4_text':
        c.update(no_rope_layers=[], attn_temperature_tuning=4)
        c.pop('layer_types')
        c.pop('moe_layers')
    return c


def G(d):
    return T.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation='eager').cuda().eval()


R = {}
for n, (k, kw) in S.items():
    d = W + '/' + n
    P = d + '/config.json'
    R[n] = e = []
    try:
        torch.manual_seed(0)
        m = T.AutoModelForCausalLM.from_config(getattr(T, k + 'Config')(**dict(C, **kw)), dtype=torch.float32)
        with torch.no_grad():
            for q, p in m.named_parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * .1)
            for q, b in m.named_buffers():
                if q.endswith('correction_bias'):
                    b.copy_(torch.randn_like(b) * .5)
        m.to(torch.bfloat16).save_pretrained(d)
        j = json.load(open(P))
        json.dump(L(j), open(P, 'w'), indent=1)
        try:
            m2 = G(d)
        except Exception as x:  # transformers refuses the old spelling: keep its own config
            e.append('OLD ' + repr(x)[:300])
            json.dump(j, open(P, 'w'), indent=1)
            m2 = G(d)
        with torch.no_grad():
            np.save(d + '/logits.npy', m2(input_ids=torch.tensor(I).cuda()).logits.float().cpu().numpy())
        json.dump({'ids': I}, open(d + '/ids.json', 'w'))
        c = m2.config
        e += [str(getattr(c, a, None)) for a in ('rope_parameters', 'layer_types', 'no_rope_layers')]
    except Exception as x:
        e.append(repr(x)[:500])
    print(n, e, flush=True)
json.dump(R, open(W + '/summary.json', 'w'), indent=1)
shutil.make_archive(O + '/x', 'gztar', W)
