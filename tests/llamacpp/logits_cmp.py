#!/usr/bin/env python3
"""Compare logits printed by `harness logits-ids` (one line of vocab values per position) with a
transformers ground truth logits.npy [rows, positions, vocab] (row 0), on the first N positions.
Prints the largest difference relative to the largest |logit|; exit 1 above the bound.
usage: logits_cmp.py OUT.txt logits.npy POSITIONS BOUND"""
import ast
import struct
import sys


def npy(path):
    d = open(path, "rb").read()
    assert d[:6] == b"\x93NUMPY", path
    hl = struct.unpack("<H", d[8:10])[0]
    h = ast.literal_eval(d[10:10 + hl].decode())
    assert h["descr"] == "<f4" and not h["fortran_order"], h
    n = 1
    for x in h["shape"]:
        n *= x
    return h["shape"], struct.unpack("<%df" % n, d[10 + hl:10 + hl + 4 * n])


shape, ref = npy(sys.argv[2])
npos, bound = int(sys.argv[3]), float(sys.argv[4])
V = shape[2]
got = [list(map(float, line.split())) for line in open(sys.argv[1])]
diff = big = 0.0
agree = 0
for t in range(npos):
    row = ref[t * V:(t + 1) * V]
    diff = max(diff, max(abs(a - b) for a, b in zip(got[t], row)))
    big = max(big, max(abs(b) for b in row))
    agree += max(range(V), key=lambda v: got[t][v]) == max(range(V), key=lambda v: row[v])
rel = diff / big
print("max |diff| %.3g of max |logit| %.3g (%.3g relative), arg-max agrees at %d of %d positions" % (diff, big, rel, agree, npos))
sys.exit(0 if rel <= bound else 1)
