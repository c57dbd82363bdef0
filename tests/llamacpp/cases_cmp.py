#!/usr/bin/env python3
"""llama.cpp's tokenization of the real tokenizers' cases (../shared/tokenizers/*/cases.jsonl: the
ids Hugging Face `tokenizers` gives) with ramfit's vocabulary-only GGUF of that tokenizer.
Two behaviours of llama.cpp itself are left out, by rule, not by case: when tokenizer.json has an
NFC normalizer (Qwen's), text that NFC changes (llama.cpp applies no normalizer); and, for byte-level
vocabularies that have a token "</s>", text containing it (llama.cpp marks a token spelled "</s>" as a control token,
whatever the file says, and then splits it out).
usage: cases_cmp.py cases.jsonl VOCAB.gguf HARNESS"""
import json
import subprocess
import sys
import unicodedata

cases = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
gguf, harness = sys.argv[2], sys.argv[3]
with open(gguf + ".in", "wb") as f:
    for c in cases:
        b = c["text"].encode("utf-8")
        f.write(b"%d\n" % len(b) + b)
out = subprocess.run([harness, "tokenize-many", gguf, gguf + ".in", "0"], capture_output=True, text=True, check=True)
lines = out.stdout.split("\n")
byte_level = b"gpt2" in open(gguf, "rb").read(4096)
tj = json.load(open(sys.argv[1].rsplit("/", 1)[0] + "/tokenizer.json", encoding="utf-8"))
nfc = "NFC" in json.dumps(tj.get("normalizer"))
eos_text = byte_level and "</s>" in tj["model"]["vocab"]
checked = same = 0
bad = []
for i, c in enumerate(cases):
    t = c["text"]
    if (nfc and unicodedata.normalize("NFC", t) != t) or (eos_text and "</s>" in t):
        continue
    checked += 1
    got = [int(x) for x in lines[i].split()] if i < len(lines) else None
    if got == c["ids"]:
        same += 1
    else:
        bad.append(t)
print("%d of %d cases as Hugging Face (%d left out by rule)%s" % (same, checked, len(cases) - checked,
      (": first differing %r" % bad[0][:60]) if bad else ""))
sys.exit(1 if bad else 0)
