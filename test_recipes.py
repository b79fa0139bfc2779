"""
Every recipe works as users run it.

- Each config/*.py states every setting that defines its recipe, so that a change of
  TrainConfig's defaults (the quick start's) can never change another recipe: each file is parsed
  against the real defaults and against defaults where every value is different, and what defines
  the recipe must come out the same.
"""

import dataclasses
import typing
from pathlib import Path

import pytest

import train
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
