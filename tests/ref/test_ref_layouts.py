#!/usr/bin/env python3
"""Checks of ref.py's checkpoint reading that the fixtures alone do not make: the same weights laid
out as other checkpoints are (sharded with an index, transformers 5's fused expert tensors and
module names, the ...ForConditionalGeneration prefixes, F32/F16 storage) give the same logits, and
bad input fails with a message naming the file, tensor or key. Exit status 0 when all pass."""
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'arch')
failures = []
TMP = tempfile.mkdtemp(prefix='ref_layouts.')  # removed at the end


def check(name, cond, detail=''):
    print('%-62s %s %s' % (name, 'ok' if cond else 'FAIL', detail))
    if not cond:
        failures.append(name)


def read_all(d):
    """{stored name: (dtype, shape, raw bytes)} of a fixture (its one model.safetensors)."""
    path = os.path.join(d, 'model.safetensors')
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: (v['dtype'], v['shape'], data[v['data_offsets'][0]:v['data_offsets'][1]])
            for k, v in header.items() if k != '__metadata__'}


def write(path, tensors):
    """Minimal safetensors writer: {name: (dtype, shape, raw bytes)}."""
    header, off, blobs = {}, 0, []
    for k, (dt, shape, raw) in tensors.items():
        header[k] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def bf16_array(raw, shape):
    return (np.frombuffer(raw, '<u2').astype(np.uint32) << 16).view(np.float32).reshape(shape)


def variant(src, tensors, config=None, sharded=False):
    d = tempfile.mkdtemp(dir=TMP)
    cfg = config if config is not None else json.load(open(os.path.join(src, 'config.json')))
    json.dump(cfg, open(os.path.join(d, 'config.json'), 'w'))
    if sharded:
        names = sorted(tensors)
        half = len(names) // 2
        shards = {'model-00001-of-00002.safetensors': names[:half], 'model-00002-of-00002.safetensors': names[half:]}
        for f, ns in shards.items():
            write(os.path.join(d, f), {k: tensors[k] for k in ns})
        json.dump({'metadata': {}, 'weight_map': {k: f for f, ns in shards.items() for k in ns}},
                  open(os.path.join(d, 'model.safetensors.index.json'), 'w'))
    else:
        write(os.path.join(d, 'model.safetensors'), tensors)
    return d


def logits(d):
    return ref.Model(d).forward(ref.load_ids(os.path.join(FIX, 'qwen2', 'ids.json')))


def same(name, d_ref, d_var):
    a, b = logits(d_ref), logits(d_var)
    check(name, np.array_equal(a, b), '(max diff %.1e)' % np.max(np.abs(a - b)))


def fuse_experts(t, prefix_of, n_experts, names):
    """Per-expert gate/up/down into transformers 5's experts.gate_up_proj [E, 2I, H] and
    experts.down_proj [E, H, I] (bf16 bytes), under the given module prefix."""
    out = dict(t)
    layers = sorted({k.split('.experts.')[0] for k in t if '.experts.' in k})
    for lp in layers:
        g = [bf16_array(t['%s.experts.%d.%s.weight' % (lp, e, names[0])][2], t['%s.experts.%d.%s.weight' % (lp, e, names[0])][1]) for e in range(n_experts)]
        u = [bf16_array(t['%s.experts.%d.%s.weight' % (lp, e, names[1])][2], t['%s.experts.%d.%s.weight' % (lp, e, names[1])][1]) for e in range(n_experts)]
        dn = [bf16_array(t['%s.experts.%d.%s.weight' % (lp, e, names[2])][2], t['%s.experts.%d.%s.weight' % (lp, e, names[2])][1]) for e in range(n_experts)]
        for k in [k for k in out if k.startswith(lp + '.experts.')]:
            del out[k]
        gu = np.stack([np.concatenate([a, b], 0) for a, b in zip(g, u)])
        dd = np.stack(dn)
        np_ = prefix_of(lp)
        out[np_ + '.experts.gate_up_proj'] = ('BF16', gu.shape, (gu.view(np.uint32) >> 16).astype('<u2').tobytes())
        out[np_ + '.experts.down_proj'] = ('BF16', dd.shape, (dd.view(np.uint32) >> 16).astype('<u2').tobytes())
        if prefix_of(lp) != lp:  # move the router along
            out[np_ + '.gate.weight'] = out.pop(lp + '.gate.weight')
    return out


def main():
    # 1. sharded with an index
    src = os.path.join(FIX, 'qwen3_moe')
    t = read_all(src)
    same('sharded checkpoint + model.safetensors.index.json', src, variant(src, t, sharded=True))
    # 2. transformers 5 fused experts (qwen3_moe) and mixtral's block_sparse_moe -> mlp
    same('qwen3_moe: fused experts.gate_up_proj / down_proj', src,
         variant(src, fuse_experts(t, lambda lp: lp, 8, ('gate_proj', 'up_proj', 'down_proj'))))
    msrc = os.path.join(FIX, 'mixtral')
    mt = read_all(msrc)
    same('mixtral: fused experts under mlp. (transformers 5 names)', msrc,
         variant(msrc, fuse_experts(mt, lambda lp: lp.replace('block_sparse_moe', 'mlp'), 4, ('w1', 'w3', 'w2'))))
    # 3. transformers 5's in-memory prefix of the multimodal wrapper
    gsrc = os.path.join(FIX, 'gemma3_mm')
    gt = {('model.language_model.' + k[len('language_model.model.'):] if k.startswith('language_model.model.') else k): v
          for k, v in read_all(gsrc).items()}
    same('gemma3_mm: model.language_model.* names', gsrc, variant(gsrc, gt))
    # 4. F32 and F16 storage of the same (bf16-representable; F16 of small values) weights
    qsrc = os.path.join(FIX, 'qwen2')
    qt = read_all(qsrc)
    f32 = {k: ('F32', s, bf16_array(raw, s).astype('<f4').tobytes()) for k, (dt, s, raw) in qt.items()}
    same('qwen2: F32 storage', qsrc, variant(qsrc, f32))
    f16 = {k: ('F16', s, bf16_array(raw, s).astype('<f2').tobytes()) for k, (dt, s, raw) in qt.items()}
    a, b = logits(qsrc), logits(variant(qsrc, f16))
    check('qwen2: F16 storage (rounded weights, close logits)', ref.rel_err(b, a) < 1e-2,
          '(rel %.1e)' % ref.rel_err(b, a))
    # 5. bad input: a clear RefError naming the culprit, never a crash
    def fails(name, fn, needle):
        try:
            fn()
            check(name, False, '(no error)')
        except ref.RefError as e:
            check(name, needle in str(e), '(%s)' % str(e)[:70])
    d = variant(qsrc, qt)
    with open(os.path.join(d, 'model.safetensors'), 'r+b') as f:
        f.truncate(os.path.getsize(os.path.join(d, 'model.safetensors')) - 100)
    fails('truncated safetensors names the tensor', lambda: ref.Checkpoint(d), 'data offsets')
    d = variant(qsrc, {k: v for k, v in qt.items() if k != 'model.layers.1.mlp.up_proj.weight'})
    fails('missing tensor named', lambda: logits(d), 'model.layers.1.mlp.up_proj.weight')
    cfg = json.load(open(os.path.join(qsrc, 'config.json')))
    d = variant(qsrc, qt, dict(cfg, model_type='falcon'))
    fails('unsupported model_type named', lambda: ref.Model(d), "'falcon'")
    d = variant(qsrc, qt, dict(cfg, hidden_size='64'))
    fails('bad config value named', lambda: ref.Model(d), 'hidden_size')
    d = tempfile.mkdtemp(dir=TMP)
    open(os.path.join(d, 'model.safetensors'), 'wb').write(struct.pack('<Q', 1 << 40))
    json.dump(cfg, open(os.path.join(d, 'config.json'), 'w'))
    fails('header length past the end', lambda: ref.Checkpoint(d), 'runs past the end')
    print('%d failed' % len(failures))
    return 1 if failures else 0


if __name__ == '__main__':
    try:
        rc = main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)
