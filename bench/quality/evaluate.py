"""Measuring a plan: quantize it with the CLI, then KL-divergence and perplexity against the original
model on a slice of text. Results are cached by the plan file's digest, so reruns only do new work."""
import os
import shutil

import hashlib
import json

from common import load_json, save_json

_CACHES = {}


def plan_key(path):
    """What the checkpoint depends on: the quantizer and each unit's config (not the weights, budget or
    report fields of the plan file), so equal checkpoints share one measurement."""
    p = load_json(path)
    body = json.dumps([p["mode"], sorted((u["name"], u["bits"], u["gs"]) for u in p["units"])])
    return hashlib.sha256(body.encode()).hexdigest()[:16]


class Evaluator:
    def __init__(self, cli, work, model_dir, max_tokens, ctx=256):
        self.cli = cli
        self.work = work
        self.model_dir = model_dir
        self.max_tokens = max_tokens
        self.ctx = ctx
        self.cache_path = os.path.join(work, "results.json")
        # one dict per file for every Evaluator of a work dir (sweep, damage, headroom): each saves the whole
        # cache, so separate copies dropped each other's results
        self.cache = _CACHES.setdefault(self.cache_path, load_json(self.cache_path, {}))

    def measure(self, plan_path, texts, quant=None):
        """{text name: {kld, kld_stderr, kld_p99, top1, ppl, ppl_base, nll, nll_base, tokens}} for PLAN_PATH.
        QUANT: (extra quantize arguments, what they depend on beyond the plan): GPTQ's --mode gptq --stats S with
        S's checksum, so a checkpoint made with other statistics is measured anew."""
        key = plan_key(plan_path)
        if quant:
            key += "-" + hashlib.sha256(json.dumps(quant[1]).encode()).hexdigest()[:8]
        todo = [t for t in texts if "%s|%s|%d|%d" % (key, os.path.basename(t), self.max_tokens, self.ctx) not in self.cache]
        if todo:
            out = os.path.join(self.work, "q-" + key)
            if os.path.exists(out):
                shutil.rmtree(out)
            args = ["quantize", self.model_dir, "--plan", plan_path, "-o", out, "--quiet", "--json",
                    "--threads", self.cli.threads] + (list(quant[0]) if quant else [])
            self.cli.run(args)
            try:
                for t in todo:
                    r = self.cli.run(["kld", self.model_dir, out, "--file", t, "--max-tokens", self.max_tokens,
                                      "--ctx", self.ctx, "--json", "--quiet", "--threads", self.cli.threads])
                    self.cache["%s|%s|%d|%d" % (key, os.path.basename(t), self.max_tokens, self.ctx)] = {
                        "kld": r["kld_mean"], "kld_stderr": r["kld_stderr"], "kld_p99": r["kld_p99"],
                        "top1": r["top1_agree"], "ppl": r["quant"]["ppl"], "ppl_base": r["base"]["ppl"],
                        "nll": r["quant"]["nll_mean"], "nll_base": r["base"]["nll_mean"], "tokens": r["tokens"]}
                    save_json(self.cache_path, self.cache)
            finally:
                shutil.rmtree(out, ignore_errors=True)
        return {os.path.basename(t): self.cache["%s|%s|%d|%d" % (key, os.path.basename(t), self.max_tokens, self.ctx)]
                for t in texts}
