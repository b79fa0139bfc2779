"""
The record of a training run: what train.py prints, metrics.jsonl, and optionally Weights & Biases.

`RunLog.start()` opens the log of a new or resumed run; `RunLog.log(record, line)` does all
three for one event: prints the human-readable line, appends the record (a dict) as one JSON line
to out_dir/metrics.jsonl, and sends it to W&B when asked. Only rank 0 logs; other processes get a
RunLog that does nothing.

metrics.jsonl is one JSON object per line: easy to append to, to plot, and to read back after a
crash. `read_metrics()` reads it back (guide.py's figures, bench.py's recipes mode); every record
carries "seconds", the time since the training loop started. A resumed run first drops the
events it is about to produce again (`trim_metrics`), so the file reads as one uninterrupted run.
"""

import importlib
import json
from pathlib import Path

from common import ConfigError, fsync_file, write_atomic

METRICS_NAME = "metrics.jsonl"


class RunLog:
    def __init__(self, path=None, wandb_config=None, enabled=True):
        """path: metrics.jsonl (None = no file). wandb_config: dict(project, name, config) or None."""
        self.path, self.enabled = path, enabled
        self.wandb = start_wandb(**wandb_config) if (enabled and wandb_config) else None

    @classmethod
    def start(cls, path, resume_iter=None, enabled=True, wandb=None):
        """The log of a run writing to path (metrics.jsonl): a new file for a new run; for a run
        resumed at resume_iter, the old file without what that run will log again."""
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if resume_iter is None:
                path.unlink(missing_ok=True)
            else:
                trim_metrics(path, resume_iter)
        return cls(path, wandb, enabled)

    def say(self, line):
        if self.enabled:
            print(line, flush=True)

    def log(self, record, line):
        """One event: record is a dict with at least "event" and "iter"."""
        if not self.enabled:
            return
        self.say(line)
        if self.path is not None:
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
