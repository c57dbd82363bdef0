#!/usr/bin/env python3
"""Compare the tensors of two GGUF files (test tooling; a GGUF reader written from the format
description, independent of ramfit's): every tensor of A must be in B with the same ggml type,
shape and data bytes. Metadata is not compared (llama-quantize adds its own keys).

usage: gguf_cmp.py A.gguf B.gguf [--types-only] [--quiet]
exit 0 when equal; 1 with one line per difference."""
import struct
import sys

SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
# block size, bytes per block of the ggml types that occur here
TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
         7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
         12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 20: ("IQ4_NL", 32, 18),
         23: ("IQ4_XS", 256, 136), 30: ("BF16", 1, 2)}


def read_gguf(path):
    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n]
        pos += n
        return s.decode("utf-8", "replace")

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(SCALAR[t])

    assert data[:4] == b"GGUF", path + ": not GGUF"
    pos = 4
    take("I")
    nt, nkv = take("Q"), take("Q")
    meta = {}
    for _ in range(nkv):
        k = string()
        meta[k] = value(take("I"))
    align = meta.get("general.alignment", 32)
    infos = []
    for _ in range(nt):
        name = string()
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        t = take("I")
        off = take("Q")
        infos.append((name, t, ne, off))
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, t, ne, off in infos:
        tname, blk, bb = TYPES.get(t, ("type%d" % t, 1, 0))
        n = 1
        for d in ne:
            n *= d
        nbytes = n // blk * bb
        tensors[name] = (tname, ne, data[base + off:base + off + nbytes])
    return meta, tensors


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    types_only = "--types-only" in sys.argv
    quiet = "--quiet" in sys.argv
    _, a = read_gguf(args[0])
    _, b = read_gguf(args[1])
    bad = 0
    for name, (t, ne, d) in a.items():
        if name not in b:
            print("%s: missing in %s" % (name, args[1]))
            bad += 1
            continue
        t2, ne2, d2 = b[name]
        if t != t2 or ne != ne2:
            print("%s: %s %s vs %s %s" % (name, t, ne, t2, ne2))
            bad += 1
        elif not types_only and d != d2:
            first = next(i for i in range(len(d)) if d[i] != d2[i])
            print("%s: %s data differs (first at byte %d of %d)" % (name, t, first, len(d)))
            bad += 1
    for name in b:
        if name not in a:
            print("%s: only in %s" % (name, args[1]))
            bad += 1
    if not quiet:
        print("%s: %d tensors compared, %d differ%s" % ("OK" if not bad else "FAIL", len(a), bad,
                                                       " (types and shapes only)" if types_only else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
