"""Peak extra memory of one train.estimate_loss evaluation batch at GPT-2's shape, on the CPU under
bfloat16 autocast (as a GPU evaluates): the high-water mark of resident memory (VmHWM, reset just
before) minus the resident memory before. Usage: python evalmem.py REPO BATCH"""
import os, sys, json, contextlib
repo, batch = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, repo); os.chdir(repo)
import numpy as np, torch
torch.set_num_threads(2)
import train, data
from model import GPT, GPTConfig
tmp = f"/tmp/m/evalmem-data"
if not os.path.exists(f"{tmp}/g/meta.json"):
    os.makedirs(f"{tmp}/g", exist_ok=True)
    toks = np.random.default_rng(0).integers(0, 50257, 200_000).astype("<u2")
    toks.tofile(f"{tmp}/g/train.bin"); toks.tofile(f"{tmp}/g/val.bin")
    json.dump({"tokenizer": "gpt2", "vocab_size": 50257, "dtype": "uint16", "format": "bin"}, open(f"{tmp}/g/meta.json", "w"))
model = GPT(GPTConfig()).eval()  # GPT-2 124M, float32 weights
loader = data.BatchLoader(f"{tmp}/g", batch, 1024, "cpu")
loader.token_bytes  # built before measuring
ctx = torch.autocast("cpu", dtype=torch.bfloat16)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
with torch.no_grad(), ctx:  # warm-up: one forward, so lazily made buffers exist
    model(torch.zeros(1, 8, dtype=torch.long))
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
losses = train.estimate_loss(model, loader, 1, ctx)  # one batch of each split
peak = status("VmHWM")
logits_bytes = batch * 1024 * 50257 * 2
print(json.dumps(dict(batch=batch, extra_gb=(peak - before) / 1e9, bf16_logits_gb=logits_bytes / 1e9,
                      extra_over_logits=(peak - before) / logits_bytes, val=losses["val"], val_bpb=losses["val_bpb"])))
