"""
Talk to a chat-finetuned checkpoint, turn after turn.

    python chat.py --out_dir=out-spelling                   # after python train.py config/sft_spelling.py
    python chat.py --out_dir=out-spelling --prompt="spell brother" --temperature=0   # one turn, for scripts
    python chat.py --out_dir=out-dolly --system="Answer briefly." --top_p=0.9

Type a message and press enter; the answer is printed as it is generated, and Ctrl-C stops it
half-way. /reset starts a new conversation; /quit, end of input (Ctrl-D) or Ctrl-C at the prompt
ends. Options are --key=value, as in sample.py,
whose sampling options these are; `--help` lists them. stdout carries only the assistant's text
(one answer per turn, each followed by a newline), so `python chat.py --prompt=... > answer.txt`
keeps just that; the prompt marker, notices and errors go to stderr.

The conversation lives in the generation engine's KV cache (ChatSession). A new user turn is
appended to it: only the new tokens go through the model, not the whole conversation again.
(`python bench.py --mode=chat` measures what that saves against recomputing every turn.) When
the context window is full, the oldest exchanges are forgotten, and stderr says so: the model
has learned positions 0..block_size-1 only. A message the tokenizer cannot write (a character
model's unknown characters) is refused in one line, and the conversation goes on.
"""

import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from checkpoint import load_model
from common import ConfigError, UserError, autocast, pick_device, pick_dtype, run_command
from configurator import parse_config
from engine import KVCache, sample_next_token, validate_sampling
from sample import check_sampling, write_as_decoded
from sft import ChatTokenizer


@dataclass
class ChatConfig:
    out_dir: str = "out-spelling"  # a chat-finetuned training run (its ckpt.pt)
    prompt: Optional[str] = None  # one user turn: print the answer and exit; None = interactive
    system: Optional[str] = None  # a system message that opens the conversation (kept when it fills)
    max_new_tokens: int = 256  # the longest answer, in tokens
    temperature: float = 0.6  # 0 = greedy; nanochat's chat CLI samples at 0.6 with top_k 50
    top_k: Optional[int] = 50  # None = no top-k filtering
    top_p: Optional[float] = None  # e.g. 0.9 for nucleus sampling; None = off
    keep_cache: bool = True  # False recomputes the whole conversation at every turn (same answers, slower)
    seed: int = 1337  # the same seed, settings and turns give the same answers
    device: str = "auto"  # 'auto' = cuda, then mps, then cpu; or e.g. 'cpu', 'cuda:1'
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # 'auto' = bfloat16 on recent GPUs, float32 on CPU


class ChatError(UserError):
    """A turn that cannot be taken (too long for the context): the conversation is unchanged."""


class ChatSession:
    """
    A conversation as token ids, and the KV cache of the tokens the model has already read.

    ids holds every token of the conversation so far; cache.pos says how many of them the model
    has read. A turn appends <|user|> message <|end|> <|assistant|>, feeds the model only the
    tokens it has not read (the new turn, and the <|end|> that closed the last answer), and then
    generates one token at a time until <|end|>. With keep_cache=False the cache is thrown away
    at every turn and the whole conversation is read again: the same answers, the cost that the
    cache saves.
    """

    def __init__(self, model, tokenizer, system=None, keep_cache=True):
        if not isinstance(tokenizer, ChatTokenizer):
            raise ChatError("this checkpoint is a base model (its tokenizer has no chat tokens): "
                            "finetune it first, e.g. python train.py config/sft_spelling.py, then "
                            "python chat.py --out_dir=out-spelling")
        self.model, self.tok, self.keep_cache = model, tokenizer, keep_cache
        self.block_size = model.config.block_size
        self.system = []
        if system:
            self.system = [tokenizer.role_token["system"]] + tokenizer.encode(system) + [tokenizer.end_token]
            if len(self.system) >= self.block_size // 2:
                raise ChatError(f"the system message is {len(self.system)} tokens; keep it under half the "
                                f"context ({self.block_size // 2}) so that turns fit beside it")
        self.reset()

    def reset(self):
        self.ids = list(self.system)
        self.exchanges = []  # where each user turn starts in ids, to forget the oldest first
        self.cache = None
        self.forgotten = 0  # exchanges dropped to make room, for the caller to report
        self.cut = False  # whether the last answer was stopped before the model ended it

    def say(self, text, max_new_tokens=256, temperature=0.0, top_k=None, top_p=None, generator=None):
        """Yield the assistant's answer to the user's `text`, one token id at a time (<|end|> is
        not yielded). Raises TokenizerError or ChatError, before anything changes, when the
        message cannot be written or cannot fit. Afterwards self.cut is True if the answer was
        stopped by max_new_tokens or by the end of the window rather than by the model."""
        validate_sampling(temperature, top_k, top_p)
        tok = self.tok
        turn = [tok.role_token["user"]] + tok.encode(text) + [tok.end_token, tok.role_token["assistant"]]
        # Room for the turn and an answer: the whole answer, or half the window if that is less.
        room = min(max_new_tokens, self.block_size // 2)
        if len(self.system) + len(turn) + room > self.block_size:
            raise ChatError(f"the message is {len(turn) - 3} tokens; with "
                            f"{'the system message and ' if self.system else ''}room for an answer "
                            f"({room}) that is more than the context of {self.block_size}: write a shorter one")
        self.forgotten = 0
        while len(self.ids) + len(turn) + room > self.block_size:
            # Forget the oldest exchange (its user turn and the answer). Every later token moves to
            # a new position, so the cached keys and values no longer hold: read them again.
            start = self.exchanges.pop(0)
            end = self.exchanges[0] if self.exchanges else len(self.ids)
            del self.ids[start:end]
            self.exchanges = [e - (end - start) for e in self.exchanges]
            self.cache, self.forgotten = None, self.forgotten + 1
        self.exchanges.append(len(self.ids))
        self.ids += turn
        self.cut = True  # until the model writes <|end|> itself
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                if self.cache is None or not self.keep_cache:
                    self.cache = KVCache(model.config)  # read the whole conversation
                device = model.lm_head.weight.device
                unread = torch.tensor([self.ids[self.cache.pos:]], device=device)
                logits, _ = model(unread, kv_cache=self.cache, last_only=True)
                for n in range(max_new_tokens):
                    token = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator).item()
                    self.ids.append(token)
                    if token == tok.end_token:
                        self.cut = False
                        return
                    yield token
                    if n + 1 == max_new_tokens or len(self.ids) == self.block_size:
                        break
                    logits, _ = model(torch.tensor([[token]], device=device), kv_cache=self.cache)
        finally:
            # Stopped before the model closed its turn (max_new_tokens, the end of the window, a
            # caller that stopped reading, Ctrl-C): close it, so the next turn reads a well-formed
            # conversation. A forward pass cut short leaves the cache's pos where it was, so the
            # tokens it did not finish reading are simply read again with the next turn.
            if self.cut:
                self.ids.append(tok.end_token)
            model.train(was_training)


def stream_answer(session, text, cfg, generator, out):
    """Take one turn, writing the answer to `out` as it is generated; returns its token ids."""
    answer = write_as_decoded(session.tok, session.say(text, cfg.max_new_tokens, cfg.temperature, cfg.top_k,
                                                       cfg.top_p, generator), out)
    out.write("\n")
    out.flush()
    return answer


def notices(session, cfg):
    """What the turn did to the conversation, for stderr."""
    if session.forgotten:
        print(f"(the context of {session.block_size} tokens was full: the oldest "
              f"{session.forgotten} exchange{'s' if session.forgotten > 1 else ''} forgotten)", file=sys.stderr)
    if session.cut:
        why = (f"--max_new_tokens={cfg.max_new_tokens}" if len(session.ids) < session.block_size
               else f"the end of the context ({session.block_size} tokens)")
        print(f"(the answer was cut at {why})", file=sys.stderr)


def parse_args(argv):
    """The checked ChatConfig of a command line, before any model is loaded."""
    cfg = parse_config(ChatConfig(), argv, usage=__doc__)
    check_sampling(cfg)
    if cfg.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {cfg.max_new_tokens}")
    if cfg.prompt is not None and not cfg.prompt.strip():
        raise ConfigError("--prompt is empty; give the user's message, e.g. --prompt=\"spell brother\"")
    return cfg


def main(argv=None, stdin=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    stdin = sys.stdin if stdin is None else stdin
    device = pick_device(cfg.device)
    ctx = autocast(device, pick_dtype(device, cfg.dtype))
    model, tokenizer, source = load_model("resume", cfg.out_dir, device)
    session = ChatSession(model, tokenizer, cfg.system, cfg.keep_cache)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    print(f"chatting with {source} on {device}", file=sys.stderr)
    if cfg.prompt is not None:  # one turn: a bad message is the command's one-line error
        with ctx:
            stream_answer(session, cfg.prompt, cfg, generator, sys.stdout)
        notices(session, cfg)
        return 0
    interactive = stdin.isatty()
    if interactive:
        print("type a message; /reset starts over, /quit (or Ctrl-D) ends", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        try:
            line = stdin.readline()
        except KeyboardInterrupt:  # Ctrl-C at the prompt: leave
            return 0
        if not line or line.strip() == "/quit":
            return 0
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() == "/reset":
            session.reset()
            print("(a new conversation)", file=sys.stderr)
            continue
        start = time.perf_counter()
        try:
            with ctx:
                answer = stream_answer(session, text, cfg, generator, sys.stdout)
        except UserError as e:  # unknown characters, a message too long: this turn only
            print(f"error: {e}", file=sys.stderr, flush=True)
            continue
        except KeyboardInterrupt:  # Ctrl-C stops the answer, not the chat (Ctrl-D or /quit ends it)
            print("\n(answer interrupted)", file=sys.stderr, flush=True)
            continue
        notices(session, cfg)
        seconds = time.perf_counter() - start
        print(f"({len(answer)} tokens, {len(answer) / max(seconds, 1e-9):.0f} tokens/s; "
              f"{len(session.ids)}/{session.block_size} of the context used)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    # A bad option, a missing or base checkpoint: one line, no traceback.
    sys.exit(run_command(main))
