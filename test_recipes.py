"""
Every recipe works as users run it.

- Each config/*.py states every setting that defines its recipe, so that a change of
  TrainConfig's defaults (the quick start's) can never change another recipe: each file is parsed
  against the real defaults and against defaults where every value is different, and what defines
  the recipe must come out the same.
- Every documented command (the code blocks of README.md and results/*/README.md, the comments of
  config/*.py) is parsed as its script parses it (`parse_args`: config files, flags, choices, and
  conflicts such as FSDP without torchrun), without running it.
"""

import dataclasses
import re
import shlex
import typing
from pathlib import Path

import pytest

import bench
import chat
import eval as eval_script
import guide
import prepare
import sample
import tokenizer
import train
from common import UserError
from configurator import parse_config

REPO = Path(__file__).resolve().parent
CONFIGS = sorted((REPO / "config").glob("*.py"))

# What defines a recipe, by kind. A training recipe: where it starts, the data and the batch, the
# optimizer and the schedule, what it measures and keeps; from scratch, the model's shape too.
TRAINING = ("out_dir", "dataset", "init_from", "eval_interval", "eval_iters", "always_save_checkpoint",
            "batch_size", "block_size", "gradient_accumulation_steps", "dropout",
            "optimizer", "learning_rate", "weight_decay", "beta1", "beta2", "grad_clip",
            "max_iters", "decay_lr")
SCHEDULE = ("warmup_iters", "lr_decay_iters", "min_lr")  # only read when decay_lr is on
MUON = ("muon_lr_ratio", "muon_lr_scaling")
SHAPE = ("n_layer", "n_head", "n_embd", "bias")  # from scratch only: GPT-2's weights bring theirs
EVALUATION = ("eval_only", "init_from", "dataset", "batch_size", "block_size", "eval_iters")


def defining_settings(cfg):
    """The settings that define the recipe cfg is, by its kind."""
    if cfg.eval_only:
        return EVALUATION
    keys = TRAINING + (SCHEDULE if cfg.decay_lr else ()) + (MUON if cfg.optimizer == "muon" else ())
    return keys + (SHAPE if cfg.init_from == "scratch" else ())


def other_value(value, annotation):
    """A valid value of this type that differs from value."""
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union:  # Optional[X]
        annotation = inner[0]
    if typing.get_origin(annotation) is typing.Literal:
        return next(choice for choice in typing.get_args(annotation) if choice != value)
    if annotation is bool:
        return not value
    if annotation is int:
        return 7 if value is None else value + 3
    if annotation is float:
        return 0.0123 if value is None else value * 0.37 + 0.0011
    return f"{value}-elsewhere"


def perturbed_defaults():
    hints = typing.get_type_hints(train.TrainConfig)
    defaults = train.TrainConfig()
    return dataclasses.replace(defaults, **{f.name: other_value(getattr(defaults, f.name), hints[f.name])
                                            for f in dataclasses.fields(defaults)})


def test_the_perturbed_defaults_differ_in_every_setting():
    a, b = train.TrainConfig(), perturbed_defaults()
    assert all(getattr(a, f.name) != getattr(b, f.name) for f in dataclasses.fields(a))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_a_recipe_states_every_setting_that_defines_it(config):
    as_is = parse_config(train.TrainConfig(), [str(config)])
    elsewhere = parse_config(perturbed_defaults(), [str(config)])
    unstated = [key for key in defining_settings(as_is) if getattr(as_is, key) != getattr(elsewhere, key)]
    assert not unstated, (f"{config.name} leaves {', '.join(unstated)} to TrainConfig's defaults: a change "
                          f"of the quick start would change this recipe; state them in the file")


# --------------------------------------------------------------------------------------------
# Every documented command parses: its config files, its flags, their combination
# --------------------------------------------------------------------------------------------

COMMAND = re.compile(r"\b(?:python|torchrun)\s+(?:-|\S+\.py\b)")  # "python x.py", "torchrun --..."
TORCHRUN_FLAGS_WITH_VALUES = ("--nproc_per_node", "--nnodes", "--node_rank", "--rdzv_backend",
                              "--rdzv_endpoint", "--rdzv_id", "--master_addr", "--master_port")


def logical_lines(lines):
    """Join lines that end with a backslash to the next, as a shell does."""
    joined = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        yield joined + line
        joined = ""


def shell_blocks(markdown):
    """The lines of each shell code block (```bash, ```sh or unlabelled; a ```text block holds
    another project's command or output)."""
    block, language = None, None
    for line in markdown.splitlines():
        if line.startswith("```"):
            if block is None:
                block, language = [], line[3:].strip()
            else:
                if language in ("bash", "sh", ""):
                    yield block
                block = None
        elif block is not None:
            block.append(line)


def documented_command_lines():
    """(where, text) of every line in a code block of README.md and results/*/README.md, and of
    every comment line of config/*.py, that runs python or torchrun."""
    for readme in [REPO / "README.md", *sorted((REPO / "results").glob("*/README.md"))]:
        for block in shell_blocks(readme.read_text(encoding="utf-8")):
            for line in logical_lines(block):
                if COMMAND.search(line):
                    yield readme.relative_to(REPO), line
    for config in CONFIGS:
        comments = [line.lstrip()[1:] for line in config.read_text(encoding="utf-8").splitlines()
                    if line.lstrip().startswith("#")]
        for line in logical_lines(comments):
            match = COMMAND.search(line)
            if match:  # prose may come before the command ("One GPU: python train.py ...")
                yield config.relative_to(REPO), line[match.start():]


def commands_in(line):
    """The (processes, script, arguments) of each python/torchrun command in a shell line:
    processes is None for a plain `python`, the process count for torchrun."""
    words = shlex.split(line, comments=True)
    commands, current = [], []
    for word in words + ["&&"]:
        if word in ("&&", "||", ";", "|"):
            commands.append(current)
            current = []
        else:
            current.append(word)
    for words in commands:
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # OMP_NUM_THREADS=1 python ...
            words = words[1:]
        if not words or words[0] not in ("python", "torchrun") or words[1:2] == ["-m"]:
            continue  # pip, or `python -m pytest`: not one of ours
        processes = None
        if words[0] == "torchrun":
            options = {}
            words = words[1:]
            while words and words[0].startswith("--"):
                key, _, value = words[0].partition("=")
                if not value and key in TORCHRUN_FLAGS_WITH_VALUES:
                    value, words = words[1], words[1:]
                options[key], words = value, words[1:]
            processes = int(options.get("--nproc_per_node", 1)) * int(options.get("--nnodes", 1))
            words = ["torchrun"] + words
        yield processes, words[1], words[2:]


def check_command(processes, script, argv):
    """Parse a command's arguments as its script does, without running it."""
    if script == "train.py":
        train.parse_args(argv, world_size=processes)
    elif script == "bench.py":
        bench.parse_args(argv, world_size=processes)
    elif script in PARSERS:
        assert processes is None, f"{script} does not run under torchrun"
        PARSERS[script](argv)
    else:  # a measurement's own script, kept with its results: it must at least exist
        assert (REPO / script).is_file(), f"there is no {script}"


PARSERS = {"sample.py": sample.parse_args, "eval.py": eval_script.parse_args, "prepare.py": prepare.parse_args,
           "guide.py": guide.parse_args, "tokenizer.py": tokenizer.parse_args,
           "chat.py": chat.parse_args}


# Lines that run one of this project's scripts (not `pip`, not `python -m pytest`).
DOCUMENTED = [(str(where), line) for where, line in documented_command_lines() if list(commands_in(line))]


def test_the_documentation_has_commands_to_check():
    sources = {where for where, _ in DOCUMENTED}
    assert "README.md" in sources and "config/train_gpt2.py" in sources and len(DOCUMENTED) > 50
    scripts = {script for _, line in DOCUMENTED for _, script, _ in commands_in(line)}
    assert {"train.py", "sample.py", "eval.py", "prepare.py", "bench.py", "guide.py"} <= scripts


@pytest.mark.parametrize("where, line", DOCUMENTED, ids=[f"{w}:{line.strip()[:60]}" for w, line in DOCUMENTED])
def test_a_documented_command_parses(where, line, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # config paths are relative to the repository, as a user types them
    for processes, script, argv in commands_in(line):
        try:
            check_command(processes, script, argv)
        except SystemExit as e:  # --help, or argparse's own error (already printed)
            assert e.code == 0, f"{where}: {line.strip()!r} is refused: {capsys.readouterr().err.strip()}"
        except UserError as e:
            pytest.fail(f"{where}: {line.strip()!r} is refused: {e}")


@pytest.mark.parametrize("line, message", [
    ("python train.py --learning_rte=1e-3", "did you mean 'learning_rate'"),
    ("python train.py config/no_such_recipe.py", "config file not found"),
    ("python train.py --optimizer=sgd", "optimizer expects one of"),
    ("python train.py --parallel=fsdp", "shards the model over the processes torchrun starts"),
    ("torchrun --standalone --nproc_per_node=3 train.py --gradient_accumulation_steps=4", "divisible"),
    ("torchrun --nproc_per_node=2 train.py --parallel=fsdp --dtype=float16", "not float16"),
    ("python sample.py --init_from=gtp2", "did you mean 'gpt2'"),
    ("python eval.py perplexty", "unknown task"),
    ("python prepare.py text --input=a.txt --vocab_size=512", "for --tokenizer=bpe only"),
    ("python bench.py --parallel=fsdp", "shards the model over the processes torchrun starts"),
    ("torchrun --nproc_per_node=2 sample.py", "does not run under torchrun"),
    ("python smaple.py", "there is no smaple.py"),
])
def test_the_command_check_catches_what_a_user_would_hit(line, message, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises((UserError, AssertionError), match=message):
        for processes, script, argv in commands_in(line):
            check_command(processes, script, argv)
