"""
Generate text from a trained checkpoint or from OpenAI's GPT-2.

    python sample.py                                   # from out/ckpt.pt (the quick start's model)
    python sample.py --init_from=gpt2 --start="The meaning of life is" --top_p=0.9
    python sample.py --start=FILE:prompt.txt --temperature=0 --max_new_tokens=100   # greedy

Options are --key=value, parsed like train.py's (config files work too); `--help` lists them.
stdout carries only the text (prompt included), so `python sample.py > out.txt` keeps just that;
the per-sample statistics go to stderr.
Decoding strategies: temperature=0 is greedy (always the likeliest token: deterministic, but
prone to loops); temperature > 0 samples, lower is safer and blander, higher is more surprising;
top_k keeps only the k likeliest tokens; top_p keeps the smallest set whose probability adds up
to p (nucleus sampling), which adapts to how sure the model is. Tokens are printed as they are
generated. The KV cache is on by default; --use_cache=False shows how much slower life is
without it.
"""

import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

from checkpoint import load_model
from common import ConfigError, autocast, pick_device, pick_dtype, run_command
from configurator import parse_config
from hf import check_name_or_path
from engine import generate_tokens, validate_sampling


@dataclass
class SampleConfig:
    init_from: str = "resume"  # "resume" = out_dir/ckpt.pt; or gpt2, gpt2-medium, ... or a HF folder
    out_dir: str = "out"  # the training run to sample from (with init_from="resume")
    start: str = "\n"  # the prompt, or "FILE:path" to read it from a file; "" = the start token
    num_samples: int = 3  # how many samples to generate, one after another
    max_new_tokens: int = 500  # tokens to generate per sample
    temperature: float = 0.8  # 0 = greedy
    top_k: Optional[int] = 200  # None = no top-k filtering
    top_p: Optional[float] = None  # e.g. 0.9 for nucleus sampling; None = off
    stop_at_eot: bool = False  # stop a sample at <|endoftext|> (GPT-2 tokenizer only)
    use_cache: bool = True  # the KV cache; False re-runs the whole window for every token (slower)
    seed: int = 1337  # the same seed and settings give the same samples
    device: str = "auto"  # 'auto' = cuda, then mps, then cpu; or e.g. 'cpu', 'cuda:1'
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # 'auto' = bfloat16 on recent GPUs, float32 on CPU


def prompt_ids(start, tokenizer, block_size):
    """The prompt as token ids. An empty prompt starts from the model's natural start token:
    <|endoftext|> when the tokenizer has one (every training document began after one, as in
    GPT-2's), else a newline (where a speech or paragraph begins), else id 0 for a character
    vocabulary without a newline. A prompt that fills the context keeps its last block_size // 2
    tokens, as generation does with a full window."""
    if start.startswith("FILE:"):
        path = Path(start[len("FILE:"):])
        if not path.is_file():
            raise ConfigError(f"--start={start}: there is no file {str(path)!r}; give the path of a "
                              "text file after FILE:, or the prompt itself as --start=\"...\"")
        start = path.read_text(encoding="utf-8")
    if start:
        ids = tokenizer.encode(start)  # a char model raises here, listing unknown characters
    elif tokenizer.eot_token is not None:
        ids = [tokenizer.eot_token]
    elif tokenizer.name == "char" and "\n" not in tokenizer.stoi:
        ids = [0]  # a text without line breaks: the first character of the sorted vocabulary
    else:
        ids = tokenizer.encode("\n")  # characters, or learned BPE (bytes: it can encode any text)
    if len(ids) >= block_size:
        # A full window leaves no room for a new token: generation keeps the newer half of it
        # (engine.generate_tokens), so that half is all the model will see of the prompt.
        print(f"warning: the prompt has {len(ids)} tokens and the model's context is {block_size}; "
              f"only its last {block_size // 2} tokens are used (a full window keeps its newer half)",
              file=sys.stderr)
        ids = ids[-(block_size // 2):]
    return ids


def write_as_decoded(tokenizer, tokens, out):
    """Write the text of `tokens` (token ids, as they are generated) to `out` as it appears;
    returns the ids. A GPT-2 token can end half-way through a multi-byte character (an emoji,
    say): the text waits for the rest rather than print a replacement character."""
    ids, printed = [], ""
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd"):
            out.write(text[len(printed):])
            out.flush()
            printed = text
    out.write(tokenizer.decode(ids)[len(printed):])
    return ids


def stream_sample(model, tokenizer, ids, cfg, device, ctx, generator, out=None):
    """Generate one sample, printing text as tokens arrive (to `out`, default sys.stdout);
    returns the new token ids."""
    out = sys.stdout if out is None else out  # looked up now: stdout may have been redirected
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    stop = tokenizer.eot_token if cfg.stop_at_eot else None
    with ctx:
        tokens = (token.item() for token in generate_tokens(model, idx, cfg.max_new_tokens, cfg.temperature,
                                                              cfg.top_k, cfg.top_p, cfg.use_cache, stop, generator))
        return write_as_decoded(tokenizer, itertools.takewhile(lambda token: token != stop, tokens), out)


def check_sampling(cfg):
    """A command line's temperature, top_k and top_p, checked as generation checks them: a bad one
    is the command's one-line error, before any model is loaded (chat.py's too)."""
    try:
        validate_sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def parse_args(argv):
    """The checked SampleConfig of a command line, before any model is loaded."""
    cfg = parse_config(SampleConfig(), argv, usage=__doc__)
    check_sampling(cfg)
    for name in ("num_samples", "max_new_tokens"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.init_from != "resume":
        check_name_or_path(cfg.init_from)  # a misspelt GPT-2 name or a missing folder: one line
    return cfg


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    device = pick_device(cfg.device)
    ctx = autocast(device, pick_dtype(device, cfg.dtype))
    model, tokenizer, source = load_model(cfg.init_from, cfg.out_dir, device)
    ids = prompt_ids(cfg.start, tokenizer, model.config.block_size)
    print(f"sampling from {source} on {device}", file=sys.stderr)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    prompt_text = tokenizer.decode(ids) if cfg.start else ""
    for i in range(cfg.num_samples):
        sys.stdout.write(prompt_text)
        start = time.perf_counter()
        new_ids = stream_sample(model, tokenizer, ids, cfg, device, ctx, generator)
        seconds = time.perf_counter() - start
        sys.stdout.write("\n")
        sys.stdout.flush()
        # Statistics go to stderr: stdout is the text alone.
        print(f"---------------- sample {i + 1}/{cfg.num_samples}: {len(new_ids)} tokens, "
              f"{len(new_ids) / max(seconds, 1e-9):.0f} tokens/s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    # A bad option or prompt, a missing checkpoint or a failed download: one line, no traceback.
    sys.exit(run_command(main))
