"""Shared helpers of the quality benchmark: running the ramfit CLI, plan files, statistics, SVG.

Only the Python standard library: the benchmark runs wherever the CLI builds.
"""
import hashlib
import json
import math
import os
import subprocess
import sys

ROLE_TOKENS = ["embed", "lm_head", "attn_q", "attn_k", "attn_v", "attn_o", "mlp_gate", "mlp_up", "mlp_down",
               "expert_gate", "expert_up", "expert_down", "router"]


class Cli:
    """The ramfit binary; every call is logged so the report can print the commands it ran."""

    def __init__(self, binary, threads, verbose=False):
        self.binary = binary
        self.threads = threads
        self.verbose = verbose

    def run(self, args, want_json=True, ok_fail=False):
        cmd = [self.binary] + [str(a) for a in args]
        if self.verbose:
            print("+ " + " ".join(cmd), file=sys.stderr)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            if ok_fail:
                return None
            raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-2000:]))
        return json.loads(r.stdout) if want_json else r.stdout


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------- profiles (docs/profile.md)

DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8, "I8": 1, "U8": 1}


def load_profile(path):
    """A profile in the self-contained version 1 shape (units with params, kept_bytes, ssq, stats and
    "c": [[bits, gs, bytes, <mode>_sse, <mode>_max_abs ...]]), whichever version the file is."""
    import struct
    p = load_json(path)
    if p is None or p.get("version") == 1:
        return p
    fields = p["unit_fields"]
    modes = p["modes"]
    configs = p["configs"]
    blob, pos, f32 = None, 0, False
    if "data" in p:
        with open(os.path.join(os.path.dirname(path), p["data"]["file"]), "rb") as f:
            blob = f.read()
        f32 = p["data"].get("max_abs") == "f32"

    def take(is_max):
        nonlocal pos
        if is_max and f32:
            v = struct.unpack_from("<f", blob, pos)[0]
            pos += 4
        else:
            v = struct.unpack_from("<d", blob, pos)[0]
            pos += 8
        return None if v != v else v

    units = []
    for row in p["units"]:
        u = dict(zip(fields, row))
        u["params"] = u["rows"] * u["cols"] * u["members"]
        u["kept_bytes"] = u["params"] * DTYPE_BYTES[u["dtype"]]
        cands = [configs[c] if c < len(configs) else None for c in range(64) if u["configs"] >> c & 1]
        cands = [c for c in cands if c]
        vals = list(u.get("values") or [])
        nxt = (lambda is_max: vals.pop(0)) if "values" in u else take
        u["ssq"] = nxt(False)
        u["stats"] = [nxt(False) for _ in range(5)]
        c_rows = []
        for k, (bits, gs) in enumerate(cands):
            if isinstance(u["sizes"], list):
                nbytes = u["sizes"][k]
            else:
                nbytes = u["params"] * bits // 8 + 2 * (u["params"] // gs) * DTYPE_BYTES[u["sizes"]]
            entry = [bits, gs, nbytes]
            for _ in modes:
                entry += [nxt(False), nxt(True)]
            c_rows.append(entry)
        u["c"] = c_rows
        units.append(u)
    p["units"] = units
    p["cand_fields"] = ["bits", "gs", "bytes"] + [m + k for m in modes for k in ("_sse", "_max_abs")]
    return p


# ---------------------------------------------------------------- plan files written by the benchmark

def profile_units(profile):
    return {u["name"]: u for u in profile["units"]}


def cand_index(profile):
    f = profile["cand_fields"]
    return {k: f.index(k) for k in f}


def unit_candidate(profile, unit, bits, gs, mode):
    """(bytes, d) of UNIT at (BITS, GS) in MODE, or None when the profile has no such candidate."""
    ix = cand_index(profile)
    for c in unit["c"]:
        if c[ix["bits"]] == bits and c[ix["gs"]] == gs:
            sse = c[ix[mode + "_sse"]]
            return c[ix["bytes"]], (sse / unit["ssq"] if unit["ssq"] > 0 else 0.0)
    return None


def write_plan(template, profile, choice, mode, method, path):
    """A plan file from TEMPLATE (a plan of the same profile) with CHOICE: unit name -> (bits, gs);
    units not in CHOICE, or without that candidate, are kept. Returns the total bytes."""
    units = profile_units(profile)
    plan = json.loads(json.dumps(template))
    total = plan["other_bytes"]
    for x in plan["units"]:
        u = units[x["name"]]
        bits, gs = choice.get(x["name"], (0, 0))
        c = unit_candidate(profile, u, bits, gs, mode) if bits else None
        if c is None:
            x["bits"], x["gs"], x["bytes"], x["d"], x["max_abs"] = 0, 0, u["kept_bytes"], 0.0, 0.0
        else:
            x["bits"], x["gs"], x["bytes"], x["d"] = bits, gs, c[0], c[1]
        total += x["bytes"]
    plan["total_bytes"] = total
    plan["budget"] = total
    plan["bpw"] = 8.0 * total / plan["params"]
    plan["mode"] = mode
    plan["bench_label"] = method  # the loader accepts only planner methods in "method": keep the template's
    plan["status"] = "rule"
    save_json(path, plan)
    return total


def use_more_bits(i, n):
    """llama.cpp's rule for the layers whose attn_v / ffn_down get more bits (llama-quant.cpp)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


# llama.cpp k-quant types mapped to the MLX config nearest in bits per weight (bf16 scale + bias):
# Q2_K 2.625 -> 2/64 (2.5), Q3_K 3.4375 -> 3/64 (3.5), Q4_K 4.5 -> 4/64 (4.5), Q5_K 5.5 -> 5/64 (5.5),
# Q6_K 6.5625 -> 6/64 (6.5), Q8_0 8.5 -> 8/64 (8.5).
KQ = {"Q2_K": (2, 64), "Q3_K": (3, 64), "Q4_K": (4, 64), "Q5_K": (5, 64), "Q6_K": (6, 64), "Q8_0": (8, 64)}


def llama_preset(profile, preset):
    """unit -> (bits, gs) under a llama.cpp _K_M preset (the per-tensor rules of llama_tensor_get_type,
    simplified to the roles ramfit knows). Routers stay unquantized as llama.cpp keeps ffn_gate_inp."""
    n = profile["model"]["config"]["num_layers"]
    choice = {}
    for u in profile["units"]:
        role, i = u["role"], u["layer"]
        if preset == "Q4_K_M":
            t = "Q4_K"
            if role == "lm_head": t = "Q6_K"
            elif role in ("attn_v", "mlp_down", "expert_down") and use_more_bits(i, n): t = "Q6_K"
        elif preset == "Q5_K_M":
            t = "Q5_K"
            if role == "lm_head": t = "Q6_K"
            elif role in ("attn_v", "mlp_down", "expert_down") and use_more_bits(i, n): t = "Q6_K"
        elif preset == "Q3_K_M":
            t = "Q3_K"
            if role == "lm_head": t = "Q6_K"
            elif role == "attn_v": t = "Q5_K" if i < 2 else "Q4_K"
            elif role in ("mlp_down", "expert_down"): t = "Q5_K" if i < n // 16 else "Q4_K"
            elif role == "attn_o": t = "Q4_K"
        else:
            raise ValueError(preset)
        if role == "router":
            continue
        choice[u["name"]] = KQ[t]
    return choice


# ---------------------------------------------------------------- statistics (no numpy)

def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0 + 1
        i = j + 1
    return r


def pearson(a, b):
    n = len(a)
    if n < 2:
        return float("nan")
    ma, mb = sum(a) / n, sum(b) / n
    sab = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    saa = sum((x - ma) ** 2 for x in a)
    sbb = sum((y - mb) ** 2 for y in b)
    return sab / math.sqrt(saa * sbb) if saa > 0 and sbb > 0 else float("nan")


def spearman(a, b):
    return pearson(ranks(a), ranks(b))


def linfit(x, y):
    """y = a + b x by least squares: (a, b, r^2)."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((v - mx) ** 2 for v in x)
    sxy = sum((u - mx) * (v - my) for u, v in zip(x, y))
    b = sxy / sxx if sxx > 0 else 0.0
    a = my - b * mx
    r = pearson(x, y)
    return a, b, r * r


def lstsq(rows, y, ridge=1e-6):
    """Least squares with a small ridge, by the normal equations (a handful of unknowns)."""
    k = len(rows[0])
    A = [[sum(r[i] * r[j] for r in rows) + (ridge if i == j else 0.0) for j in range(k)] for i in range(k)]
    bvec = [sum(r[i] * t for r, t in zip(rows, y)) for i in range(k)]
    for c in range(k):
        p = max(range(c, k), key=lambda i: abs(A[i][c]))
        A[c], A[p] = A[p], A[c]
        bvec[c], bvec[p] = bvec[p], bvec[c]
        for i in range(k):
            if i != c and A[c][c] != 0:
                f = A[i][c] / A[c][c]
                for j in range(c, k):
                    A[i][j] -= f * A[c][j]
                bvec[i] -= f * bvec[c]
    return [bvec[i] / A[i][i] if A[i][i] else 0.0 for i in range(k)]


# ---------------------------------------------------------------- SVG (hand-written, deterministic)

PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def _fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000 or a < 0.01:
        return "%.2g" % v
    return ("%.3f" % v).rstrip("0").rstrip(".")


def svg_panels(path, title, panels, width=980, height=420):
    """PANELS: list of dicts {title, xlabel, ylabel, logy, logx, series: [{name, points [(x, y)], line}] ,
    hlines: [(y, label)], vlines: [(x, label)]}, drawn side by side."""
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">'
           % (width, height), '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="18" text-anchor="middle" font-size="14">%s</text>' % (width // 2, _esc(title))]
    pw = width // len(panels)
    for pi, p in enumerate(panels):
        x0, y0, w, h = pi * pw + 62, 40, pw - 80, height - 130
        pts = [pt for s in p["series"] for pt in s["points"] if pt[1] is not None and pt[1] > 0 or not p.get("logy")]
        pts = [pt for pt in pts if pt[1] is not None]
        if not pts:
            continue
        fx = (lambda v: math.log10(v)) if p.get("logx") else (lambda v: v)
        fy = (lambda v: math.log10(max(v, 1e-12))) if p.get("logy") else (lambda v: v)
        xs = [fx(pt[0]) for pt in pts] + [fx(v) for v, _ in p.get("vlines", [])]
        ys = [fy(pt[1]) for pt in pts] + [fy(v) for v, _ in p.get("hlines", [])]
        xmin, xmax = min(xs), max(xs)
        ymin, ymax = min(ys), max(ys)
        if xmax == xmin: xmax += 1
        if ymax == ymin: ymax += 1
        padx, pady = 0.04 * (xmax - xmin), 0.06 * (ymax - ymin)
        xmin, xmax, ymin, ymax = xmin - padx, xmax + padx, ymin - pady, ymax + pady
        X = lambda v: x0 + (fx(v) - xmin) / (xmax - xmin) * w
        Y = lambda v: y0 + h - (fy(v) - ymin) / (ymax - ymin) * h
        out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>' % (x0, y0, w, h))
        out.append('<text x="%d" y="%d" text-anchor="middle" font-size="12">%s</text>' % (x0 + w // 2, y0 - 6, _esc(p["title"])))
        for k in range(6):
            tv = ymin + (ymax - ymin) * k / 5
            val = 10 ** tv if p.get("logy") else tv
            yy = y0 + h - h * k / 5
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>' % (x0, yy, x0 + w, yy))
            out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (x0 - 4, yy + 4, _fmt(val)))
            tx = xmin + (xmax - xmin) * k / 5
            xval = 10 ** tx if p.get("logx") else tx
            xx = x0 + w * k / 5
            out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (xx, y0 + h + 14, _fmt(xval)))
        out.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (x0 + w // 2, y0 + h + 30, _esc(p["xlabel"])))
        out.append('<text transform="translate(%d,%d) rotate(-90)" text-anchor="middle">%s</text>'
                   % (x0 - 48, y0 + h // 2, _esc(p["ylabel"])))
        for v, label in p.get("hlines", []):
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#888" stroke-dasharray="4,3"/>' % (x0, Y(v), x0 + w, Y(v)))
            out.append('<text x="%d" y="%.1f" fill="#666">%s</text>' % (x0 + 4, Y(v) - 3, _esc(label)))
        for v, label in p.get("vlines", []):
            out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#888" stroke-dasharray="2,3"/>' % (X(v), y0, X(v), y0 + h))
            out.append('<text x="%.1f" y="%d" fill="#666">%s</text>' % (X(v) + 3, y0 + 12, _esc(label)))
        for si, s in enumerate(p["series"]):
            col = PALETTE[si % len(PALETTE)]
            sp = sorted(pt for pt in s["points"] if pt[1] is not None and (pt[1] > 0 or not p.get("logy")))
            if s.get("line") and len(sp) > 1:
                out.append('<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>'
                           % (col, " ".join("%.1f,%.1f" % (X(a), Y(b)) for a, b in sp)))
            for a, b in sp:
                out.append('<circle cx="%.1f" cy="%.1f" r="%.1f" fill="%s"/>' % (X(a), Y(b), 2.6 if s.get("line") else 3.4, col))
            ly = y0 + h + 46 + 13 * (si // 2)
            lx = x0 + (si % 2) * (w // 2)
            out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>' % (lx, ly - 9, col))
            out.append('<text x="%d" y="%d">%s</text>' % (lx + 14, ly, _esc(s["name"])))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
