"""The command line as users meet it: --help on every script, and user errors vs bugs.

A user's mistake (a UserError) must end in one line naming the fix; anything else is a bug and
must keep its whole traceback. Both are checked on the real scripts, in subprocesses.
"""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import bench
import chat
import eval as evaluation
import sample
import train

REPO = Path(__file__).resolve().parent
SCRIPTS = {"train.py": train.TrainConfig, "sample.py": sample.SampleConfig,
           "eval.py": evaluation.EvalConfig, "bench.py": bench.BenchConfig,
           "chat.py": chat.ChatConfig}


def run_script(args, cwd=REPO, code=None):
    """Run a script (or python -c code) as a user would; returns the CompletedProcess."""
    command = [sys.executable] + (["-c", code] if code else []) + args
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_option_with_type_default_and_comment(script, flag):
    argv = [script, "perplexity", flag] if script == "eval.py" else [script, flag]
    result = run_script(argv)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for field in dataclasses.fields(SCRIPTS[script]):
        assert f"--{field.name}" in result.stdout, f"{script} {flag} does not list {field.name}"
    # Spot checks: the type, the default and the comment beside the field in the dataclass.
    if script == "train.py":
        assert "--learning_rate  float; default 8e-3" in result.stdout
        assert "the peak, reached after warmup" in result.stdout
        assert "one of 'scratch', 'resume', 'checkpoint', 'gpt2'" in result.stdout
    if script == "bench.py":
        assert "one of 'train', 'generate'" in result.stdout


def test_eval_help_without_a_task_shows_the_tasks_and_options():
    result = run_script(["eval.py", "--help"])
    assert result.returncode == 0, result.stderr
    assert "python eval.py perplexity" in result.stdout and "--max_tokens" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bug_keeps_its_traceback(script, tmp_path):
    # A ValueError raised where a user's mistake never is (here: inside device selection, which
    # every script calls) is a bug: the script must not print it as a one-line "error:".
    code = ("import runpy, sys, common\n"
            "def broken(*args, **kwargs):\n"
            "    raise ValueError('a bug deep inside')\n"
            "common.pick_device = broken\n"
            f"sys.argv = [{script!r}] + sys.argv[1:]\n"
            f"runpy.run_path({str(REPO / script)!r}, run_name='__main__')\n")
    args = {"train.py": [f"--out_dir={tmp_path / 'out'}", f"--data_dir={tmp_path / 'data'}"],
            "sample.py": [], "eval.py": ["perplexity"], "bench.py": [], "chat.py": []}[script]
    result = run_script(args, cwd=REPO, code=code)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: a bug deep inside" in result.stderr
    assert not result.stderr.startswith("error:")


def test_a_bare_flag_sets_a_bool_option():
    cfg = bench.parse_config(bench.BenchConfig(), ["--json", "--compile", "--compile=False"])
    assert cfg.json is True and cfg.compile is False
