"""
Configuration: a run is described by a dataclass, and this module fills one in from the command
line, explains its options, and prints it back.

    parse_config(defaults, argv, usage=, description=)  -> a new, checked dataclass instance
    help_text(config_class_or_instance, usage=, description=) -> what --help prints
    options_table(config_class)                         -> the options as a Markdown table (README)
    field_comments(config_class)                        -> {field: (section, comment)}, from its source
    config_to_dict(config), print_config(config)        -> what a checkpoint stores / the run prints

Rules of parse_config():
  - argv is read left to right, later items overriding earlier ones. An item is a config file
    (plain Python assignments, executed into a fresh namespace, never into globals(); names
    starting with _, imports, functions and classes in it are ignored) or an override
    `--key=value`.
  - Every key must be a field of the dataclass: a typo is an error that names the closest valid
    key, not a silent new variable.
  - A value must fit its field's annotation. Exactly the types the configs use are supported:
    bool (True or False, nothing else), int, float (an int is accepted and stored as a float),
    str (the raw text, so --out_dir=out-2 needs no quotes), Literal[...] (a fixed set of choices;
    anything else is an error listing them), and Optional[X] / X | None of these (None allowed).
    A dataclass with any other annotation is a bug in the program, reported as a TypeError
    before any argument is read.
  - A bare `--flag` sets a bool option to True (`--compile`); `--compile=False` turns it off.
  - `--help` or `-h` anywhere prints every option (type, default, and the comment beside it in
    the dataclass: those comments are the documentation) and exits with status 0, as argparse
    does.
"""

import ast
import dataclasses
import difflib
import inspect
import io
import math
import os
import re
import sys
import textwrap
import tokenize
import types
import typing

from common import ConfigError

HELP_FLAGS = ("--help", "-h")


def parse_config(defaults, argv, *, usage="", description=""):
    """Return a new config: `defaults` (a dataclass instance) updated from `argv`, in order.

    argv items are either config file paths (`config/train_shakespeare_char.py`) or
    `--key=value` overrides. Later items override earlier ones, so
    `config/foo.py --batch_size=8` takes foo.py's settings but batch_size=8.
    Every key must be a field of the dataclass and every value must fit the field's type.
    `--help`/`-h` prints help_text(defaults, usage, description) and raises SystemExit(0).
    """
    if not dataclasses.is_dataclass(defaults) or isinstance(defaults, type):
        raise TypeError(f"parse_config expects a dataclass instance, got {defaults!r}")
    field_types = _field_types(type(defaults))  # checks every annotation, not only those used
    # Help wins over everything else, so `train.py config/typo.py --help` still shows the help.
    if any(arg in HELP_FLAGS for arg in argv):
        print(help_text(defaults, usage=usage, description=description))
        raise SystemExit(0)

    overrides = {}
    for arg in argv:
        if arg.startswith("--"):
            key, value = _parse_override(arg, field_types)
            overrides[key] = value
        else:
            overrides.update(_read_config_file(arg, field_types))
    # replace() builds a new instance, so `defaults` is never modified.
    return dataclasses.replace(defaults, **overrides)


# --------------------------------------------------------------------------------------------
# The supported annotations
# --------------------------------------------------------------------------------------------

def _field_types(config_class):
    """Return {field name: annotation} for the fields a user can set, all checked as supported."""
    type_hints = typing.get_type_hints(config_class)  # resolves "int" strings and forward refs
    field_types = {}
    for f in dataclasses.fields(config_class):
        if not f.init:
            continue  # computed in __post_init__, not a setting
        expected = type_hints[f.name]
        if not _is_supported(expected):
            raise TypeError(f"{config_class.__name__}.{f.name}: annotation {_annotation_text(expected)} "
                            "is not one parse_config supports: bool, int, float, str, Literal[...] "
                            "or Optional[one of these]")
        field_types[f.name] = expected
    return field_types


def _is_supported(expected):
    inner, _ = _split_optional(expected)
    if inner is None:
        return False
    if typing.get_origin(inner) is typing.Literal:
        # Only values a user can type and repr() writes back: 'text', 3, True, None.
        return all(arg is None or isinstance(arg, (str, int)) for arg in typing.get_args(inner))
    return inner in (bool, int, float, str)


def _split_optional(expected):
    """Optional[X] and X | None -> (X, True); X -> (X, False); any other union -> (None, True)."""
    if typing.get_origin(expected) not in (typing.Union, types.UnionType):
        return expected, False
    others = [arg for arg in typing.get_args(expected) if arg is not type(None)]
    return (others[0] if len(others) == 1 else None), True


def _annotation_text(expected):
    return expected.__name__ if isinstance(expected, type) else str(expected).replace("typing.", "")


def _type_name(expected):
    """The annotation in words, for messages and --help: 'int', 'float or None', "one of 'a', 'b'"."""
    inner, optional = _split_optional(expected)
    if typing.get_origin(inner) is typing.Literal:
        name = "one of " + ", ".join(repr(arg) for arg in typing.get_args(inner))
    else:
        name = inner.__name__
    return name + " or None" if optional else name


# --------------------------------------------------------------------------------------------
# Reading overrides and config files
# --------------------------------------------------------------------------------------------

def _parse_override(arg, field_types):
    """Turn "--key=value" (or a bare "--flag" for a bool) into (key, typed value)."""
    if "=" not in arg:
        key = arg[2:]
        _check_known_key(key, field_types, source="on the command line")
        if _split_optional(field_types[key])[0] is bool:
            return key, True  # --compile means --compile=True, as in most command-line tools
        raise ConfigError(f"{arg!r} has no value: write {arg}=VALUE")
    # Split on the first "=" only, so a value may itself contain "=" (--prompt="a=b").
    key, raw_value = arg[2:].split("=", 1)
    _check_known_key(key, field_types, source="on the command line")
    expected = field_types[key]
    try:
        # literal_eval understands Python literals (3, 3e-4, True, None, 'text') and, unlike
        # eval, can never run code.
        value = ast.literal_eval(raw_value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = raw_value
    if not _fits(value, expected) and _accepts_str(expected):
        # For text fields the raw string is what was meant: --out_dir=out-foo or --mode=train
        # (not literals) or --run_name=2024 (a literal int, but the field wants text).
        value = raw_value
    return key, _convert(key, value, expected, source=f"--{key}={raw_value}")


def _read_config_file(path, field_types):
    """Execute a config file into a fresh dict and return its settings, checked and typed."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path} "
                          "(arguments without -- are config file paths; overrides are written --key=value)")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    # A fresh namespace, never globals(): the file can only produce settings, and we look at
    # each one. compile() with the path makes tracebacks point at the config file's lines.
    namespace = {}
    exec(compile(source, path, "exec"), namespace)

    settings = {}
    for key, value in namespace.items():
        # Skip private helpers (_x, __builtins__) and things that are not settings:
        # `import math` or a helper function/class in the file.
        not_a_setting = inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value)
        if key.startswith("_") or not_a_setting:
            continue
        _check_known_key(key, field_types, source=f"in {path}")
        settings[key] = _convert(key, value, field_types[key], source=f"{path}: {key} = {value!r}")
    return settings


def _check_known_key(key, field_types, source):
    if key not in field_types:
        raise ConfigError(f"unknown config key {key!r} {source}" + _valid_keys_hint(key, field_types))


def _valid_keys_hint(key, field_types):
    # difflib catches typos (learning_rte -> learning_rate); with no close match, list them all.
    close = difflib.get_close_matches(key, field_types, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; valid keys are: " + ", ".join(sorted(field_types))


def _convert(key, value, expected, source):
    """Return `value` converted to the field type `expected`, or raise ConfigError."""
    if not _fits(value, expected):
        inner, _ = _split_optional(expected)
        if typing.get_origin(inner) is typing.Literal:
            raise ConfigError(f"{source}: {key} expects {_type_name(expected)}, got {value!r}"
                              + _closest_choice_hint(value, typing.get_args(inner)))
        hint = " (write True or False)" if inner is bool else ""
        raise ConfigError(f"{source}: {key} expects {_type_name(expected)}, "
                          f"got {value!r} ({type(value).__name__}){hint}")
    # An int for a float field is fine (--lr=1 means 1.0), but store a real float so the
    # dataclass holds what its annotation says.
    if _split_optional(expected)[0] is float and type(value) is int:
        return float(value)
    return value


def _closest_choice_hint(value, choices):
    # Compare as text, so that a choice of any literal type can be suggested (genrate -> 'generate').
    by_text = {str(choice): choice for choice in choices}
    close = difflib.get_close_matches(str(value), by_text, n=1, cutoff=0.6)
    return f"; did you mean {by_text[close[0]]!r}?" if close else ""


def _fits(value, expected):
    """Does `value` fit the (supported, see _is_supported) annotation `expected`?"""
    inner, optional = _split_optional(expected)
    if value is None:
        return optional
    if typing.get_origin(inner) is typing.Literal:
        # Compare types too: True == 1 and 1.0 == 1 in Python, but --choice=True is not choice 1.
        return any(type(value) is type(choice) and value == choice for choice in typing.get_args(inner))
    # bool is a subclass of int in Python, so compare exact types: --compile=1 is rejected rather
    # than guessed, and True is not an int.
    if inner is float:
        return type(value) in (int, float)
    return type(value) is inner


def _accepts_str(expected):
    inner, _ = _split_optional(expected)
    if typing.get_origin(inner) is typing.Literal:
        return any(isinstance(choice, str) for choice in typing.get_args(inner))
    return inner is str


# --------------------------------------------------------------------------------------------
# Documentation: --help and the README's table, both from the dataclass's own comments
# --------------------------------------------------------------------------------------------

def help_text(config, usage="", description=""):
    """Return the --help text: usage, description, then every option in declaration order.

    `config` is a dataclass or an instance of one; with an instance, the defaults shown are its
    values. Each option shows its type, its default and the comment written beside it (or, when
    there is none, the comment lines directly above it) in the dataclass's source. Section
    comments such as `# --- data ---` become headings.
    """
    config_class = config if isinstance(config, type) else type(config)
    field_types = _field_types(config_class)
    defaults = _defaults(config)
    docs = field_comments(config_class)

    parts = [textwrap.dedent(text).strip() for text in (usage, description) if text and text.strip()]
    lines = ["options: --key=value, or config files of `key = value` lines; applied left to right.",
             "A bare --flag sets a bool option to True."]
    for name, expected in field_types.items():
        section, comment = docs.get(name, (None, ""))
        if section:
            lines += ["", f"{section}:"]
        lines.append(f"  --{name}  {_type_name(expected)}; default {_format_default(defaults[name])}")
        if comment:
            lines += textwrap.wrap(comment, width=96, initial_indent=" " * 6, subsequent_indent=" " * 6)
    parts.append("\n".join(lines))
    return "\n\n".join(parts)


def options_table(config_class):
    """Return the options as a Markdown table, `| option | default | meaning |`, one row a field.

    README.md's table of train.py's options is this function's output for TrainConfig.
    """
    defaults = _defaults(config_class)
    docs = field_comments(config_class)
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for name in _field_types(config_class):
        # A "|" would end the table cell early, so it is escaped, even inside `code`.
        default = _format_default(defaults[name]).replace("|", "\\|")
        meaning = docs.get(name, (None, ""))[1].replace("|", "\\|")
        rows.append(f"| `{name}` | `{default}` | {meaning} |")
    return "\n".join(rows)


def _defaults(config):
    """{field name: default}: an instance's values, or a class's declared defaults."""
    if not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    defaults = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
        else:
            defaults[f.name] = dataclasses.MISSING  # a field the caller must always give
    return defaults


def _format_default(value):
    """A default as a reader would write it in a config file: "out", 8e-3, None, True."""
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, str):
        text = repr(value)
        # Double quotes, as the config files and model code write strings, where repr allows it.
        if text.startswith("'") and '"' not in value:
            text = '"' + text[1:-1].replace("\\'", "'") + '"'
        return text
    if isinstance(value, float) and math.isfinite(value) and 0 < abs(value) < 1e-2:
        # Learning rates read better as 6e-4 than as repr's 0.0006: the fewest digits that still
        # give back exactly this float.
        for digits in range(17):
            text = f"{value:.{digits}e}"
            if float(text) == value:
                break
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return repr(value)


SECTION_COMMENT = re.compile(r"#\s*-{3,}\s*(.*?)\s*-{3,}\s*$")  # "# --- data ---" -> "data"


def field_comments(config_class):
    """Return {field name: (section heading or None, comment)} from the dataclass's source.

    The comment is the one on the field's own line, or else the comment lines directly above it
    (no blank line between). A `# --- name ---` line starts a section; its heading is given with
    the first field after it. The source is read with `tokenize`, which knows where strings end,
    so a default such as `start: str = "#"` is not mistaken for a comment.
    """
    try:
        source = inspect.getsource(config_class)
    except OSError:
        return {}  # no source file (a class typed into the interactive prompt): no comments to show
    names = {f.name for f in dataclasses.fields(config_class)}
    comments = {}
    above = []  # comment lines since the last field, blank line or section
    section = None
    line_tokens = []  # the tokens of the current logical line, comments included
    depth = 0  # indentation depth; the class body is at class_depth + 1
    class_depth = None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.INDENT:
            depth += 1
        elif token.type == tokenize.DEDENT:
            depth -= 1
        elif token.type == tokenize.NL and not line_tokens:
            above = []  # a blank line: the comments before it belong to nothing below
        elif token.type == tokenize.NL and line_tokens[0].type == tokenize.COMMENT:
            # A line holding only a comment: a section heading or part of a field's comment.
            match = SECTION_COMMENT.match(line_tokens[0].string)
            if match:
                section, above = match.group(1), []
            else:
                above.append(_comment_text(line_tokens[0]))
            line_tokens = []
        elif token.type == tokenize.NEWLINE:  # the end of a statement
            first = line_tokens[0]
            if class_depth is None and first.string == "class":
                class_depth = depth
            elif depth == (class_depth or 0) + 1 and first.string in names and line_tokens[1].string == ":":
                same_line = [_comment_text(t) for t in line_tokens if t.type == tokenize.COMMENT]
                comments[first.string] = (section, " ".join(same_line or above))
                section = None
            above, line_tokens = [], []
        elif token.type not in (tokenize.NL, tokenize.ENDMARKER):
            line_tokens.append(token)
    return comments


def _comment_text(token):
    return token.string.lstrip("#").strip()


# --------------------------------------------------------------------------------------------
# Printing and saving a config
# --------------------------------------------------------------------------------------------

def config_to_dict(config):
    """Return the config as a plain dict: what a checkpoint stores (weights_only can load it)."""
    return dataclasses.asdict(config)


def print_config(config, file=None):
    """Print one `key = value` line per field.

    The output is itself a valid config file, so a run's settings can be pasted into
    config/*.py to reproduce it.
    """
    file = sys.stdout if file is None else file
    values = config_to_dict(config)
    width = max((len(key) for key in values), default=0)
    for key, value in values.items():
        print(f"{key:<{width}} = {value!r}", file=file)
