"""
Configuration: a run is described by a dataclass (train.py's TrainConfig, sample.py's
SampleConfig, ...), and this module fills one in from the command line, explains its options and
prints it back: parse_config(), help_text(), field_comments(), config_to_dict(), print_config().

The command line, read left to right (later items win): config files, plain Python assignments
executed into a fresh namespace (never into globals(); names starting with _, imports, functions
and classes are ignored), and --key=value overrides. A bare --flag sets a bool to True. Every key
must be a field (a typo names the closest one) and every value must fit the field's annotation:
bool, int, float, str, Literal[...] or Optional[one of these]; any other annotation is a bug in
the program, a TypeError before any argument is read. --help or -h prints every option with its
type, default and the comment written beside it in the dataclass: the comments are the
documentation.
"""

import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
import sys
import textwrap
import types
import typing

from common import ConfigError

HELP_FLAGS = ("--help", "-h")


def parse_config(defaults, argv, *, usage="", description=""):
    """A new config: `defaults` (a dataclass instance) updated from `argv` (config file paths and
    --key=value), in order: `config/foo.py --batch_size=8` is foo.py's settings but batch_size=8.
    `--help`/`-h` prints help_text(defaults, usage, description) and raises SystemExit(0)."""
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
    return dataclasses.replace(defaults, **overrides)  # a new instance: defaults stay as they are


# --- The supported annotations ---

def _field_types(config_class):
    """Return {field name: annotation} for the fields a user can set, all checked as supported."""
    type_hints = typing.get_type_hints(config_class)  # resolves "int" strings and forward refs
    field_types = {}
    for f in dataclasses.fields(config_class):
        if not f.init:
            continue  # computed in __post_init__, not a setting
        expected = type_hints[f.name]
        if not _is_supported(expected):
            text = expected.__name__ if isinstance(expected, type) else str(expected).replace("typing.", "")
            raise TypeError(f"{config_class.__name__}.{f.name}: annotation {text} is not one parse_config "
                            "supports: bool, int, float, str, Literal[...] or Optional[one of these]")
        field_types[f.name] = expected
    return field_types


def _is_supported(expected):
    inner, _ = _split_optional(expected)
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


def _type_name(expected):
    """The annotation in words, for messages and --help: 'int', 'float or None', "one of 'a', 'b'"."""
    inner, optional = _split_optional(expected)
    if typing.get_origin(inner) is typing.Literal:
        name = "one of " + ", ".join(repr(arg) for arg in typing.get_args(inner))
    else:
        name = inner.__name__
    return name + " or None" if optional else name


# --- Reading overrides and config files ---

def _parse_override(arg, field_types):
    """Turn "--key=value" (or a bare "--flag" for a bool) into (key, typed value)."""
    key, has_value, raw_value = arg[2:].partition("=")  # the first "=": a value may hold more
    if key not in field_types:
        raise ConfigError(f"unknown config key {key!r} on the command line" + _closest(key, field_types))
    expected = field_types[key]
    if not has_value:
        if _split_optional(expected)[0] is bool:
            return key, True  # --compile means --compile=True, as in most command-line tools
        raise ConfigError(f"{arg!r} has no value: write {arg}=VALUE")
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
    namespace = {}  # never globals(): the file can only produce settings, each of them checked
    exec(compile(source, path, "exec"), namespace)
    settings = {}
    for key, value in namespace.items():
        # Skip private helpers (_x, __builtins__) and things that are not settings:
        # `import math` or a helper function/class in the file.
        if key.startswith("_") or inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value):
            continue
        if key not in field_types:
            raise ConfigError(f"unknown config key {key!r} in {path}" + _closest(key, field_types))
        settings[key] = _convert(key, value, field_types[key], source=f"{path}: {key} = {value!r}")
    return settings


def _closest(text, choices, none_found="; valid keys are: {}"):
    """'; did you mean ...?' naming the closest of choices (typos: learning_rte, genrate)."""
    by_text = {str(choice): choice for choice in choices}  # choices of any literal type, as text
    close = difflib.get_close_matches(str(text), by_text, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {by_text[close[0]]!r}?"
    return none_found.format(", ".join(sorted(by_text)))


def _convert(key, value, expected, source):
    """Return `value` converted to the field type `expected`, or raise ConfigError."""
    if not _fits(value, expected):
        inner, _ = _split_optional(expected)
        if typing.get_origin(inner) is typing.Literal:
            raise ConfigError(f"{source}: {key} expects {_type_name(expected)}, got {value!r}"
                              + _closest(value, typing.get_args(inner), none_found=""))
        hint = " (write True or False)" if inner is bool else ""
        raise ConfigError(f"{source}: {key} expects {_type_name(expected)}, "
                          f"got {value!r} ({type(value).__name__}){hint}")
    # An int for a float field is fine (--lr=1 means 1.0), but store a real float so the
    # dataclass holds what its annotation says.
    if _split_optional(expected)[0] is float and type(value) is int:
        return float(value)
    return value


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
    return type(value) in ((int, float) if inner is float else (inner,))


def _accepts_str(expected):
    inner, _ = _split_optional(expected)
    if typing.get_origin(inner) is typing.Literal:
        return any(isinstance(choice, str) for choice in typing.get_args(inner))
    return inner is str


# --- Documentation: --help, from the dataclass's own comments ---

def help_text(config, usage="", description=""):
    """The --help text: usage, description, then every option in declaration order, with its type,
    its default (an instance's values, or a dataclass's defaults) and its comment (field_comments:
    `# --- data ---` lines become headings)."""
    config_class = config if isinstance(config, type) else type(config)
    field_types = _field_types(config_class)
    docs = field_comments(config_class)
    parts = [textwrap.dedent(text).strip() for text in (usage, description) if text and text.strip()]
    lines = ["options: --key=value, or config files of `key = value` lines; applied left to right.",
             "A bare --flag sets a bool option to True."]
    for f in (f for f in dataclasses.fields(config_class) if f.name in field_types):
        section, comment = docs.get(f.name, (None, ""))
        if not isinstance(config, type):
            default = getattr(config, f.name)  # an instance: its values are the defaults shown
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if section:
            lines += ["", f"{section}:"]
        lines.append(f"  --{f.name}  {_type_name(field_types[f.name])}; default {_format_default(default)}")
        if comment:
            lines += textwrap.wrap(comment, width=96, initial_indent=" " * 6, subsequent_indent=" " * 6)
    parts.append("\n".join(lines))
    return "\n\n".join(parts)


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
        text = next(t for t in (f"{value:.{digits}e}" for digits in range(17)) if float(t) == value)
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return repr(value)


SECTION_COMMENT = re.compile(r"#\s*-{3,}\s*(.*?)\s*-{3,}\s*$")  # "# --- data ---" -> "data"


def field_comments(config_class):
    """Return {field name: (section heading or None, comment)} from the dataclass's source.

    The comment is the one after the field on its own line, or else the comment lines directly
    above it (no blank line between). A `# --- name ---` line starts a section; its heading is
    given with the first field after it. Python's own parser (ast) says where each field's
    statement ends, so a default such as `start: str = "#"` is not mistaken for a comment.
    """
    try:
        source = textwrap.dedent(inspect.getsource(config_class))
    except OSError:
        return {}  # no source file (a class typed into the interactive prompt): no comments to show
    lines = source.splitlines()
    fields = [node for node in ast.parse(source).body[0].body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)]
    comments, previous_end = {}, 0
    for node in fields:
        between = lines[previous_end:node.lineno - 1]  # the lines since the last field
        headings = [m.group(1) for m in map(SECTION_COMMENT.match, (line.strip() for line in between)) if m]
        above = []
        for line in reversed(between):  # the comment lines right above, up to a blank or a heading
            text = line.strip()
            if not text.startswith("#") or SECTION_COMMENT.match(text):
                break
            above.insert(0, text.lstrip("#").strip())
        after = lines[node.end_lineno - 1][node.end_col_offset:].strip()
        same_line = after.lstrip("#").strip() if after.startswith("#") else ""
        comments[node.target.id] = (headings[-1] if headings else None, same_line or " ".join(above))
        previous_end = node.end_lineno
    return comments


# --- Printing and saving a config ---

def config_to_dict(config):
    """Return the config as a plain dict: what a checkpoint stores (weights_only can load it)."""
    return dataclasses.asdict(config)


def print_config(config, file=None):
    """Print one `key = value` line per field. The output is itself a valid config file, so a
    run's settings can be pasted into config/*.py to reproduce it."""
    file = sys.stdout if file is None else file
    values = config_to_dict(config)
    width = max((len(key) for key in values), default=0)
    for key, value in values.items():
        print(f"{key:<{width}} = {value!r}", file=file)
