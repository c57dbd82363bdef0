"""Ground truth for the error model: each unit's own damage.

For every quantization unit u and candidate c, a plan quantizes u alone at c (all other units kept) and
the KL-divergence of the result from the original model is measured on a slice of text. The data-free
prediction of that damage is w_u * D_u(c)^p (the planner's objective term); how well it ranks and
scales the measurements, and which weights make it do so best, is the calibration."""
import math
import os

from common import (ROLE_TOKENS, lstsq, linfit, save_json, load_json, spearman, unit_candidate, write_plan)

# ------------------------------------------------------------------ collection


def collect(cli, ev, profile, template, cands, mode, text, work, log, oracle=False):
    """[{unit, role, layer, n_layers, params, bits, gs, d, sqnr, kld, kld_stderr, dnll, oracle}] (cached); ORACLE
    marks rows measured only for the allocation headroom (oracle.py), which the calibration leaves out."""
    rows = []
    units = profile["units"]
    total = sum(1 for u in units for b, g in cands if unit_candidate(profile, u, b, g, mode))
    done = 0
    for u in units:
        for bits, gs in cands:
            c = unit_candidate(profile, u, bits, gs, mode)
            if c is None:
                continue
            path = os.path.join(work, "unit-%s-%d-%d%s.plan.json" % (u["name"], bits, gs, "" if mode == "opt" else "-" + mode))
            write_plan(template, profile, {u["name"]: (bits, gs)}, mode, "unit", path)
            r = ev.measure(path, [text])[os.path.basename(text)]
            done += 1
            log("  damage %d/%d  %-45s %d/%-3d  D=%.3g  KLD=%.3g" % (done, total, u["name"], bits, gs, c[1], r["kld"]))
            d = c[1]
            rows.append({"mode": mode, "unit": u["name"], "role": u["role"], "layer": u["layer"], "n_layers": u["n_layers"],
                         "params": u["params"], "members": u["members"], "stats": u["stats"], "bits": bits, "gs": gs,
                         "d": d, "sqnr": -10 * math.log10(d) if d > 0 else 99.0, "kld": r["kld"],
                         "kld_stderr": r["kld_stderr"], "dnll": r["nll"] - r["nll_base"], "oracle": oracle})
    return rows


# ------------------------------------------------------------------ the data-free prediction


def uncalibrated_weights_file():
    """The priors ramfit started from (before this calibration) as a weights file: stays fixed when the
    planner's defaults change, so the report can always show what the calibration changed."""
    w = default_weights()
    return {"rule": "ramfit", "exponent": w["exponent"], "first": w["first"], "last": w["last"], "share": 1, "active": 1,
            "role": {k: float(v) for k, v in sorted(w["role"].items())}}


def default_weights():
    """The priors before calibration (design.md's sensitive projections; rule ramfit as first written)."""
    role = {r: 1.0 for r in ROLE_TOKENS}
    role.update({"lm_head": 2, "attn_v": 2, "mlp_down": 2, "expert_down": 2, "router": 4})
    return {"role": role, "first": 2.0, "last": 2.0, "share": 1, "active": 1, "exponent": 1.0}


def ram_weights():
    role = {r: 1.0 for r in ROLE_TOKENS}
    role.update({"embed": 10, "lm_head": 10, "router": 8})
    return {"role": role, "first": 3.0, "last": 2.0, "share": 0, "active": 0, "exponent": 0.5}


def unit_weight(profile, w, u):
    """rf_plan_unit_weight in Python (checked against the plan file's "weight" field by the driver)."""
    cfg = profile["model"]["config"]
    role = w["role"].get(u["role"], 1.0)
    if u["role"] == "embed" and cfg.get("tie_word_embeddings"):
        role = max(role, w["role"].get("lm_head", 1.0))
    depth = 1.0
    if u["layer"] == 0:
        depth = w["first"]
    elif u["layer"] >= 0 and u["layer"] == u["n_layers"] - 1:
        depth = w["last"]
    x = role * depth
    if w["share"]:
        def sp(v):
            n = float(v["params"])
            if w["active"] and v["role"].startswith("expert_") and cfg.get("num_experts", 0) > 0:
                n *= cfg["experts_per_tok"] / cfg["num_experts"]
            return n
        x *= sp(u) / sum(sp(v) for v in profile["units"])
    return x


def predict(profile, w, rows):
    units = {u["name"]: u for u in profile["units"]}
    def stat_factor(u):  # optional statistic terms (not in the planner's weight rule: reported only)
        return math.prod(max(u["stats"][int(k)], 1e-6) ** c for k, c in w.get("stats", {}).items())
    return [unit_weight(profile, w, units[r["unit"]]) * stat_factor(units[r["unit"]]) * r["d"] ** w["exponent"] for r in rows]


def agreement(profile, w, rows):
    """Spearman over all (unit, candidate) points, mean Spearman within one candidate (ranking units at
    the same config: what the weights decide), and the log-log fit of measured on predicted."""
    pred = predict(profile, w, rows)
    meas = [max(r["kld"], 1e-12) for r in rows]
    out = {"n": len(rows), "spearman": spearman(pred, meas)}
    per = []
    for key in sorted({(r["bits"], r["gs"]) for r in rows}):
        idx = [i for i, r in enumerate(rows) if (r["bits"], r["gs"]) == key]
        if len(idx) >= 4:
            per.append((key, spearman([pred[i] for i in idx], [meas[i] for i in idx])))
    out["per_candidate"] = per
    out["spearman_within"] = sum(s for _, s in per) / len(per) if per else float("nan")
    a, b, r2 = linfit([math.log(max(p, 1e-30)) for p in pred], [math.log(m) for m in meas])
    out["loglog_slope"], out["loglog_intercept"], out["loglog_r2"] = b, a, r2
    return out


# ------------------------------------------------------------------ calibration


def fit(datasets, roles_free, stat_terms=()):
    """Fit (each model weighted equally)  log KLD = a_model + p log D + log share + sum_role b_role + f [layer 0] + l [last layer]
    (+ s_k log stat_k)  by least squares over all models' points (a_model: one scale per model, which does
    not change any plan; all other coefficients are shared, so the rule stays global and data-free).
    Returns {exponent, role{}, first, last, stats{}} with priors exp(b), normalised so that the
    parameter-weighted mean prior of the q/k/o/gate/up projections is 1."""
    models = list(datasets)
    cols = ["p", "first", "last"] + ["role:" + r for r in roles_free] + ["stat:%d" % k for k in stat_terms]
    X, y = [], []
    for mi, name in enumerate(models):
        profile, rows = datasets[name]
        vote = 1.0 / math.sqrt(max(len(rows), 1))  # each model one vote, however many points it has
        w0 = {"role": {r: 1.0 for r in ROLE_TOKENS}, "first": 1.0, "last": 1.0, "share": 1, "active": 1, "exponent": 0}
        units = {u["name"]: u for u in profile["units"]}
        for r in rows:
            if r["kld"] <= 0 or r["d"] <= 0:
                continue
            share = unit_weight(profile, w0, units[r["unit"]])
            row = [1.0 if j == mi else 0.0 for j in range(len(models))]
            row += [math.log(r["d"]), 1.0 if r["layer"] == 0 else 0.0,
                    1.0 if r["layer"] >= 0 and r["layer"] == r["n_layers"] - 1 else 0.0]
            role = r["role"]
            if role == "embed" and profile["model"]["config"].get("tie_word_embeddings"):
                role = "lm_head"  # the tied table is also the output head
            row += [1.0 if role == q else 0.0 for q in roles_free]
            row += [math.log(max(r["stats"][k], 1e-6)) for k in stat_terms]
            X.append([v * vote for v in row])
            y.append((math.log(r["kld"]) - math.log(share)) * vote)
    beta = lstsq(X, y, ridge=1e-3)
    coef = dict(zip(cols, beta[len(models):]))
    role = {r: math.exp(coef.get("role:" + r, 0.0)) for r in ROLE_TOKENS}
    # one global scale changes no plan: make the median prior of the linear projections 1
    lin = sorted(role[r] for r in roles_free if r != "lm_head")
    med = lin[len(lin) // 2] if lin else 1.0
    role = {r: v / med for r, v in role.items()}
    return {"exponent": coef["p"], "role": role, "first": math.exp(coef["first"]), "last": math.exp(coef["last"]),
            "stats": {k: coef["stat:%d" % k] for k in stat_terms}, "share": 1, "active": 1}
