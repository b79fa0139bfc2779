"""Tests for configurator.py: config files, --key=value overrides, types, and the errors a user sees."""

import ast
import dataclasses
import io
import typing
from typing import Literal, Optional

import pytest

import configurator
from common import ConfigError
from configurator import parse_config


@dataclasses.dataclass
class RunConfig:
    out_dir: str = "out"
    batch_size: int = 12
    learning_rate: float = 6e-4
    compile: bool = True
    max_iters: Optional[int] = 5000
    init_from: str = "scratch"
    prompt: str = "\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_file_then_overrides_later_wins(tmp_path):
    config_file = write(tmp_path, "small.py", "batch_size = 4\nout_dir = 'out-small'\nlearning_rate = 1e-3\n")
    defaults = RunConfig()
    config = parse_config(defaults, [config_file, "--batch_size=8", "--batch_size=16"])
    assert config.batch_size == 16  # the last --batch_size wins over the earlier one and the file
    assert config.out_dir == "out-small"  # from the file
    assert config.learning_rate == 1e-3  # from the file
    assert config.compile is True  # untouched default
    assert defaults.batch_size == 12  # a new instance is returned; defaults are not modified


def test_override_before_file_is_overridden_by_file(tmp_path):
    config_file = write(tmp_path, "small.py", "batch_size = 4\n")
    assert parse_config(RunConfig(), ["--batch_size=8", config_file]).batch_size == 4


def test_config_file_ignores_private_names_imports_and_functions(tmp_path):
    config_file = write(tmp_path, "calc.py",
                        "import math\n_tokens = 2 ** 10\ndef helper():\n    return 1\n"
                        "class Helper:\n    pass\nbatch_size = _tokens // 256\n")
    assert parse_config(RunConfig(), [config_file]).batch_size == 4


def test_config_file_runs_in_fresh_namespace(tmp_path):
    # A file assigning a name must never leak into configurator's module globals (nanoGPT's slip).
    config_file = write(tmp_path, "leak.py", "batch_size = 3\n")
    parse_config(RunConfig(), [config_file])
    assert not hasattr(configurator, "batch_size")


def test_value_containing_equals_sign():
    assert parse_config(RunConfig(), ["--prompt=a=b"]).prompt == "a=b"
    assert parse_config(RunConfig(), ["--prompt='x = 1'"]).prompt == "x = 1"


def test_str_field_takes_raw_string_when_not_a_literal():
    config = parse_config(RunConfig(), ["--out_dir=out-foo", "--init_from=gpt2"])
    assert config.out_dir == "out-foo"
    assert config.init_from == "gpt2"
    # A literal that is not text still means text for a str field.
    assert parse_config(RunConfig(), ["--out_dir=2024"]).out_dir == "2024"


def test_int_accepted_for_float_and_converted():
    config = parse_config(RunConfig(), ["--learning_rate=1"])
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert parse_config(RunConfig(), ["--learning_rate=3e-4"]).learning_rate == 3e-4


def test_float_field_rejects_text():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--learning_rate=abc"])
    message = str(excinfo.value)
    assert "learning_rate" in message and "abc" in message and "float" in message


def test_type_mismatch_names_key_value_and_expected_type():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--batch_size=2.5"])
    message = str(excinfo.value)
    assert "batch_size" in message and "2.5" in message and "int" in message


def test_type_mismatch_in_file_names_the_file(tmp_path):
    config_file = write(tmp_path, "bad.py", "batch_size = '8'\n")
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), [config_file])
    assert config_file in str(excinfo.value) and "batch_size" in str(excinfo.value)


def test_none_for_optional_field_only():
    assert parse_config(RunConfig(), ["--max_iters=None"]).max_iters is None
    assert parse_config(RunConfig(), ["--max_iters=10"]).max_iters == 10
    with pytest.raises(ConfigError, match="batch_size"):
        parse_config(RunConfig(), ["--batch_size=None"])


def test_bool_must_be_true_or_false():
    assert parse_config(RunConfig(), ["--compile=False"]).compile is False
    assert parse_config(RunConfig(), ["--compile=True"]).compile is True
    for bad in ["--compile=1", "--compile=0", "--compile=false", "--compile=yes"]:
        with pytest.raises(ConfigError, match="True or False"):
            parse_config(RunConfig(), [bad])


def test_unknown_key_on_command_line_names_closest_key():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--batchsize=8"])
    assert "batchsize" in str(excinfo.value) and "'batch_size'" in str(excinfo.value)


def test_unknown_key_in_file_names_file_and_closest_key(tmp_path):
    config_file = write(tmp_path, "typo.py", "learning_rte = 1e-3\n")
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), [config_file])
    message = str(excinfo.value)
    assert config_file in message and "learning_rte" in message and "'learning_rate'" in message


def test_unknown_key_with_no_close_match_lists_valid_keys():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--zzz=1"])
    assert "batch_size" in str(excinfo.value) and "out_dir" in str(excinfo.value)


def test_bare_non_bool_option_says_how_to_write_it():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--batch_size"])
    assert str(excinfo.value) == "'--batch_size' has no value: write --batch_size=VALUE"
    with pytest.raises(ConfigError, match="did you mean 'compile'"):
        parse_config(RunConfig(), ["--compil"])  # a bare misspelt flag is still an unknown key


def test_bare_flag_sets_bool_to_true():
    config = parse_config(RunConfig(compile=False), ["--compile"])
    assert config.compile is True
    # Left to right: the later bare flag wins over an earlier =False, and the reverse.
    assert parse_config(RunConfig(), ["--compile=False", "--compile"]).compile is True
    assert parse_config(RunConfig(), ["--compile", "--compile=False"]).compile is False


def test_missing_config_file_names_path(tmp_path):
    missing = str(tmp_path / "nope.py")
    with pytest.raises(ConfigError, match="nope.py"):
        parse_config(RunConfig(), [missing])


def test_print_config_output_is_a_valid_config_file(tmp_path):
    config = parse_config(RunConfig(), ["--out_dir=out-x", "--max_iters=None", "--prompt=a=b"])
    buffer = io.StringIO()
    configurator.print_config(config, file=buffer)
    config_file = write(tmp_path, "printed.py", buffer.getvalue())
    assert parse_config(RunConfig(), [config_file]) == config
    assert configurator.config_to_dict(config)["out_dir"] == "out-x"


# --------------------------------------------------------------------------------------------
# Literal choices, Optional[bool], and the annotations that are refused
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ChoiceConfig:
    mode: Literal["train", "generate"] = "train"
    heads: Literal[1, 2, 4] = 1
    dtype: Optional[Literal["float32", "bfloat16"]] = None
    compile: Optional[bool] = None


def test_literal_accepts_a_bare_word_a_quoted_choice_and_a_file(tmp_path):
    assert parse_config(ChoiceConfig(), ["--mode=generate"]).mode == "generate"
    assert parse_config(ChoiceConfig(), ["--mode='generate'"]).mode == "generate"
    config_file = write(tmp_path, "choices.py", "mode = 'generate'\nheads = 4\n")
    config = parse_config(ChoiceConfig(), [config_file])
    assert config.mode == "generate" and config.heads == 4


def test_literal_refuses_other_values_listing_choices_and_closest():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(ChoiceConfig(), ["--mode=genrate"])
    assert str(excinfo.value).endswith(
        "mode expects one of 'train', 'generate', got 'genrate'; did you mean 'generate'?")
    with pytest.raises(ConfigError) as excinfo:
        parse_config(ChoiceConfig(), ["--mode=xyz"])  # nothing close: the choices, no guess
    assert "one of 'train', 'generate'" in str(excinfo.value) and "did you mean" not in str(excinfo.value)


def test_literal_of_ints_is_type_strict():
    assert parse_config(ChoiceConfig(), ["--heads=2"]).heads == 2
    # True == 1 and 2.0 == 2 in Python, but neither is the choice written in the dataclass.
    for bad in ["--heads=3", "--heads=True", "--heads=2.0", "--heads=two"]:
        with pytest.raises(ConfigError, match="one of 1, 2, 4"):
            parse_config(ChoiceConfig(), [bad])


def test_optional_literal_takes_none_or_a_choice():
    assert parse_config(ChoiceConfig(dtype="float32"), ["--dtype=None"]).dtype is None
    assert parse_config(ChoiceConfig(), ["--dtype=bfloat16"]).dtype == "bfloat16"
    with pytest.raises(ConfigError, match="did you mean 'bfloat16'"):
        parse_config(ChoiceConfig(), ["--dtype=bfloat61"])


def test_optional_bool_takes_bare_flag_true_false_and_none():
    assert parse_config(ChoiceConfig(), ["--compile"]).compile is True
    assert parse_config(ChoiceConfig(), ["--compile=False"]).compile is False
    assert parse_config(ChoiceConfig(compile=True), ["--compile=None"]).compile is None
    with pytest.raises(ConfigError, match="True or False"):
        parse_config(ChoiceConfig(), ["--compile=1"])


class Thing:
    pass


@pytest.mark.parametrize("annotation", [list[int], tuple[float, float], typing.Any, Thing,
                                        typing.Union[int, str], dict, Literal[1.5j]])
def test_unsupported_annotation_is_a_type_error_naming_the_field(annotation):
    config_class = dataclasses.make_dataclass("Odd", [("batch_size", int, 1), ("odd_field", annotation, None)])
    # Raised up front, even though no argument mentions the field: it is a bug in the program.
    for call in (lambda: parse_config(config_class(), []),
                 lambda: parse_config(config_class(), ["--batch_size=2"]),
                 lambda: configurator.help_text(config_class)):
        with pytest.raises(TypeError) as excinfo:
            call()
        assert "Odd.odd_field" in str(excinfo.value)
        assert not isinstance(excinfo.value, ConfigError)  # a bug keeps its traceback


def test_every_supported_annotation_is_accepted():
    supported = [bool, int, float, str, Optional[int], float | None, Literal["a", "b"],
                 Optional[Literal["a", 1, True]], Literal[None, "x"]]
    fields = [(f"f{i}", annotation, None) for i, annotation in enumerate(supported)]
    parse_config(dataclasses.make_dataclass("Fine", fields)(), [])  # no TypeError


# --------------------------------------------------------------------------------------------
# --help: the dataclass's comments are the documentation
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DocConfig:
    # A comment about the whole class: it belongs to no option.
    # --- output ---
    out_dir: str = "out"  # where checkpoints go
    # how many sequences per step;
    # more is smoother but slower
    batch_size: int = 12
    # --- sampling ---
    start: str = "#"  # the prompt (a "#" in a string is not a comment)
    mode: Literal["train", "generate"] = "train"  # train, or only generate text
    # a stray note, then a blank line: not this option's comment

    top_p: Optional[float] = None
    learning_rate: float = 6e-4  # the peak | after warmup
    compile: bool = False


def test_field_comments_same_line_above_and_sections():
    comments = configurator.field_comments(DocConfig)
    assert comments["out_dir"] == ("output", "where checkpoints go")
    assert comments["batch_size"] == (None, "how many sequences per step; more is smoother but slower")
    assert comments["start"] == ("sampling", 'the prompt (a "#" in a string is not a comment)')
    assert comments["mode"] == (None, "train, or only generate text")
    assert comments["top_p"] == (None, "")  # the note above it is cut off by a blank line
    assert comments["compile"] == (None, "")


@pytest.mark.parametrize("help_flag", ["--help", "-h"])
def test_help_prints_every_option_type_default_and_comment_then_exits_0(help_flag, capsys):
    with pytest.raises(SystemExit) as excinfo:
        # Anywhere in argv, and before anything is checked: the bad key never gets an error.
        parse_config(DocConfig(), ["--batchsize=3", help_flag, "--mode=x"],
                     usage="python demo.py [--key=value ...]", description="Demonstrates --help.")
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("python demo.py [--key=value ...]\n\nDemonstrates --help.\n")
    expected_lines = [
        "output:",
        '  --out_dir  str; default "out"',
        "      where checkpoints go",
        "  --batch_size  int; default 12",
        "      how many sequences per step; more is smoother but slower",
        "sampling:",
        '  --start  str; default "#"',
        '      the prompt (a "#" in a string is not a comment)',
        "  --mode  one of 'train', 'generate'; default \"train\"",
        "      train, or only generate text",
        "  --top_p  float or None; default None",
        "  --learning_rate  float; default 6e-4",
        "      the peak | after warmup",
        "  --compile  bool; default False",
    ]
    lines = out.splitlines()
    positions = [lines.index(line) for line in expected_lines]  # ValueError if a line is missing
    assert positions == sorted(positions)  # in declaration order
    assert "belongs to no option" not in out and "stray note" not in out


def test_help_shows_the_instance_values_as_defaults(capsys):
    with pytest.raises(SystemExit):
        parse_config(DocConfig(batch_size=99), ["-h"])
    assert "  --batch_size  int; default 99" in capsys.readouterr().out.splitlines()
    assert "  --batch_size  int; default 12" in configurator.help_text(DocConfig).splitlines()


@pytest.mark.parametrize("value, text", [(8e-3, "8e-3"), (2.5e-4, "2.5e-4"), (1e-5, "1e-5"), (0.0, "0.0"),
                                         (0.95, "0.95"), (0.01, "0.01"), (1.0, "1.0"), ("\n", '"\\n"'),
                                         ("it's", '"it\'s"'), ('say "hi"', "'say \"hi\"'"), (None, "None")])
def test_defaults_are_written_as_they_would_be_in_a_config_file(value, text):
    assert configurator._format_default(value) == text
    assert ast.literal_eval(text) == value  # what the table shows can be pasted into a config file
