"""The headroom of allocation: how much any per-unit choice of candidates could gain over the uniform one.

With each unit's own damage measured at a menu of candidates (the damage phase), the sum of the chosen
units' damages is a measured stand-in for the damage of a plan. The exact best plan under that sum (the
'oracle': it knows the measurements, which no data-free method does), the plan the data-free weights choose
from the same menu, and the uniform plan at the same size are then quantized and measured for real. If even
the oracle gains little over uniform at a size, no allocation can, and what is left there is the quantizer."""
import math
import os

import damage
from common import profile_units, unit_candidate, write_plan


def menu(profile, rows):
    """{unit: [(bytes, measured kld, predicted d, (bits, gs))]} from the damage rows of the opt quantizer."""
    units = profile_units(profile)
    out = {}
    for r in rows:
        c = unit_candidate(profile, units[r["unit"]], r["bits"], r["gs"], "opt") if r.get("mode", "opt") == "opt" else None
        if c is not None:
            out.setdefault(r["unit"], []).append((c[0], r["kld"], r["d"], (r["bits"], r["gs"])))
    return out


def other_bytes(profile, m):
    """Bytes of everything outside the menu's units (kept units, norms): fixed in every menu plan."""
    units = profile_units(profile)
    return profile["totals"]["bytes"] - sum(units[n]["kept_bytes"] for n in m)


def knapsack(options, avail):
    """Exact multiple-choice knapsack: one option (bytes, cost, tag) per unit, total bytes <= AVAIL, least
    total cost. Returns [tag per unit] or None when nothing fits. Bytes are scaled by their gcd."""
    g = 0
    for opts in options:
        for b, _, _ in opts:
            g = math.gcd(g, int(b))
    g = g or 1
    cap = int(avail) // g
    if cap < 0:
        return None
    inf = float("inf")
    best = [0.0] + [inf] * cap  # best[c] = least cost using exactly c units of bytes so far
    picks = []
    for opts in options:
        nxt = [inf] * (cap + 1)
        arg = [-1] * (cap + 1)
        for j, (b, cost, _) in enumerate(opts):
            w = int(b) // g
            for c in range(w, cap + 1):
                v = best[c - w] + cost
                if v < nxt[c]:
                    nxt[c], arg[c] = v, j
        picks.append(arg)
        best = nxt
    c = min(range(cap + 1), key=lambda i: best[i])
    if best[c] == inf:
        return None
    tags = []
    for opts, arg in zip(reversed(options), reversed(picks)):
        j = arg[c]
        tags.append(opts[j][2])
        c -= int(opts[j][0]) // g
    return tags[::-1]


def plans(profile, rows, weights, size):
    """{label: choice} at SIZE: the oracle, the data-free weights' choice from the same menu, and uniform
    (every unit at the one candidate whose uniform plan has SIZE bytes, when the menu has it)."""
    m = menu(profile, rows)
    names = sorted(m)
    units = profile_units(profile)
    avail = size - other_bytes(profile, m)
    pred = {n: [damage.unit_weight(profile, weights, units[n]) * d ** weights["exponent"] for _, _, d, _ in m[n]]
            for n in names}
    out = {}
    for label, cost in (("oracle (measured damage)", lambda n, i: m[n][i][1]), ("ramfit weights", lambda n, i: pred[n][i])):
        tags = knapsack([[(m[n][i][0], cost(n, i), m[n][i][3]) for i in range(len(m[n]))] for n in names], avail)
        if tags:
            out[label] = dict(zip(names, tags))
    return out


def uniform_menu_sizes(profile, rows):
    """{(bits, gs): bytes of the plan with every menu unit at that candidate} for candidates every unit has."""
    m = menu(profile, rows)
    other = other_bytes(profile, m)
    out = {}
    for key in sorted({o[3] for opts in m.values() for o in opts}):
        if all(any(o[3] == key for o in opts) for opts in m.values()):
            out[key] = other + sum(next(o[0] for o in opts if o[3] == key) for opts in m.values())
    return out


def measure(ev, profile, template, rows, weights, text, work, sizes_of):
    """[{bits, gs, size, plans: {label: {bytes, additive, kld, ppl, ppl_base, changed}}}] for each uniform
    candidate in SIZES_OF: the uniform baseline (MLX's quantizer), uniform with the opt quantizer, the oracle and
    the calibrated weights' plan (both opt)."""
    m = menu(profile, rows)
    out = []
    for key, size in sorted(uniform_menu_sizes(profile, rows).items()):
        if key not in sizes_of:
            continue
        entry = {"bits": key[0], "gs": key[1], "size": size, "plans": {}}
        uniform = {n: key for n in m}
        choices = [("uniform, MLX quantizer (the baseline)", uniform, "mlx"), ("uniform, opt quantizer", uniform, "opt")]
        choices += [(label, ch, "opt") for label, ch in plans(profile, rows, weights, size).items()]
        for i, (label, ch, mode) in enumerate(choices):
            path = os.path.join(work, "oracle-%d-%d-%d.plan.json" % (key[0], key[1], i))
            total = write_plan(template, profile, ch, mode, "oracle", path)
            add = sum(next(o[1] for o in m[n] if o[3] == c) for n, c in ch.items()) if mode == "opt" else None
            r = ev.measure(path, [text])[os.path.basename(text)]
            entry["plans"][label] = {"bytes": total, "additive": add, "kld": r["kld"], "ppl": r["ppl"],
                                     "ppl_base": r["ppl_base"], "changed": sum(1 for n, c in ch.items() if c != key)}
        out.append(entry)
    return out
