"""
The record of a training run: what train.py prints, metrics.jsonl, and optionally Weights & Biases.

`RunLog(path, ...)` is the log of one run; `log.say(line)` prints, `log.log(record, line)` does all
three for one event: prints the human-readable line, appends the record (a dict) as one JSON line
to out_dir/metrics.jsonl, and sends it to W&B when asked. `evaluation()` and `train_step()` are the
two events of train.py's loop, with what is worth knowing about each (bits per byte, perplexity,
tokens/s, MFU, the time left); `start_loop()` gives them what they need. Only rank 0 logs; other
processes get a RunLog that does nothing. The file is started by the first record: a new run's replaces an old
file; a resumed run's keeps what came before its checkpoint and drops the events it is about to
produce again (`trim_metrics`), so the file reads as one uninterrupted run.

metrics.jsonl is one JSON object per line: easy to append to, to plot, and to read back after a
crash. `read_metrics()` reads it back (guide.py's figures, bench.py's recipes mode); every record
carries "seconds", the time since the training loop started.
"""

import importlib
import json
import math
import time
from pathlib import Path

from common import ConfigError, fsync_file, write_atomic

METRICS_NAME = "metrics.jsonl"


class RunLog:
    def __init__(self, path=None, enabled=True, resume_iter=None, wandb=None):
        """path: metrics.jsonl, or None for printing only. resume_iter: the iteration a resumed
        run continues from (None: a new run). wandb: dict(project, name, config) or None."""
        self.path, self.enabled, self.resume_iter = path, enabled, resume_iter
        self.file_started = False  # the file is started by the first record
        self.started = time.perf_counter()  # start_loop() sets it again when the loop starts
        self.wandb = start_wandb(**wandb) if (enabled and wandb) else None

    def start_loop(self, start_iter, max_iters, log_interval, tokens_per_iter, flops_per_token,
                   peak_flops=None):
        """The training loop starts now: every record carries the seconds since (loss against
        time). peak_flops: of all the processes' accelerators together (None: no MFU)."""
        self.start_iter, self.max_iters, self.log_interval = start_iter, max_iters, log_interval
        self.tokens_per_iter, self.flops_per_token, self.peak_flops = tokens_per_iter, flops_per_token, peak_flops
        self.started, self.step_seconds = time.perf_counter(), None  # step_seconds: a moving average

    def evaluation(self, iter_num, losses, best_val_loss, lr, improved):
        """Log one evaluation (estimate_loss's losses); returns its record."""
        record = {"event": "eval", "iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"],
                  "train_bpb": losses["train_bpb"], "val_bpb": losses["val_bpb"],
                  "val_ppl": math.exp(losses["val"]), "best_val_loss": best_val_loss, "lr": lr,
                  "seconds": time.perf_counter() - self.started}
        self.log(record, f"eval iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
                         f"({losses['val_bpb']:.4f} bits/byte), val perplexity {record['val_ppl']:.2f}"
                         + (" (best so far)" if improved else ""))
        return record

    def train_step(self, iter_num, loss, lr, seconds):
        """One optimizer step that took `seconds`: logged every log_interval steps."""
        # Skip the first steps in the average: they include compiling and memory allocation.
        if iter_num - self.start_iter >= 2:
            self.step_seconds = seconds if self.step_seconds is None else 0.9 * self.step_seconds + 0.1 * seconds
        if iter_num % self.log_interval:
            return
        tokens_per_sec = self.tokens_per_iter / seconds
        record = {"event": "train", "iter": iter_num, "loss": loss, "lr": lr, "ms_per_iter": seconds * 1000,
                  "tokens_per_sec": tokens_per_sec, "seconds": time.perf_counter() - self.started}
        line = (f"iter {iter_num}/{self.max_iters}: loss {loss:.4f}, lr {lr:.2e}, {seconds * 1000:.1f} ms/iter, "
                f"{tokens_per_sec:,.0f} tokens/s")
        if self.peak_flops:  # model FLOPs utilisation: the share of the GPUs' peak doing useful maths
            record["mfu"] = self.flops_per_token * tokens_per_sec / self.peak_flops
            line += f", mfu {record['mfu']:.1%}"
        if self.step_seconds is not None:  # the training steps still to come, not the evaluations
            line += f", eta {format_duration((self.max_iters - iter_num - 1) * self.step_seconds)}"
        self.log(record, line)

    def say(self, line):
        if self.enabled:
            print(line, flush=True)

    def log(self, record, line):
        """One event: record is a dict with at least "event" and "iter"."""
        if not self.enabled:
            return
        self.say(line)
        if self.path is not None:
            if not self.file_started:  # a new run: a new file; a resumed one: the file up to its checkpoint
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.resume_iter is None:
                    self.path.unlink(missing_ok=True)
                else:
                    trim_metrics(self.path, self.resume_iter)
                self.file_started = True
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.wandb:
            self.wandb.log(record, step=record["iter"])

    def close(self):
        """The end of the run: the log is forced to disk (each line was appended, not fsynced)."""
        if self.enabled and self.path is not None and self.path.exists():
            fsync_file(self.path)
        if self.wandb:
            self.wandb.finish()


def start_wandb(project, name, config):
    try:
        wandb = importlib.import_module("wandb")  # imported only when asked for: optional dependency
    except ImportError:
        raise ConfigError("wandb_log=True needs the wandb package: pip install wandb") from None
    wandb.init(project=project, name=name, config=config)
    return wandb


def trim_metrics(path, iter_num):
    """On resume, drop the events the resumed run will produce again: everything after the
    checkpoint (an eval at iter_num happened before it was written; a train step did not)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short when the run was killed
            continue
        if record["iter"] < iter_num or (record["iter"] == iter_num and record["event"] == "eval"):
            kept.append(line + "\n")
    write_atomic(path, "".join(kept))


def read_metrics(path):
    """metrics.jsonl -> (train records, eval records); a missing file gives empty lists, and a
    line cut short by a kill is skipped (guide.py and bench.py read runs through this)."""
    train_records, eval_records = [], []
    if Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            (eval_records if record.get("event") == "eval" else train_records).append(record)
    return train_records, eval_records


def format_duration(seconds):
    """3725 -> '1h02m', 125 -> '2m05s', 42 -> '42s'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
