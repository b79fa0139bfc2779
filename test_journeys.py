"""
The journeys users take, end to end, as they take them: each command runs as a user types it, in
a fresh copy of the repository, on the CPU, with nothing but the recipe's size shrunk by overrides
appended after the config file (layers, width, steps, batch, context, compile off).

What a recipe downloads is served by a local HTTP server (conftest.py's FakeHub) through the real
download code: tiny Hugging Face folders stand in for OpenAI's gpt2 ... gpt2-xl (the real ones
are 0.5 to 6 GB), small llm.c shards for FineWeb, a few HellaSwag items. Multi-GPU recipes run
under torchrun with 2 CPU processes (gloo). Every config/*.py must appear in some journey: a new
recipe without one fails the suite.

The commands take 2-10 s each (most of it starting Python and importing torch).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data
import hf
from conftest import FakeHub, serving
from model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent

# The size shrink appended to a recipe: a from-scratch model's shape, and every run's steps,
# batch, context and evaluation. Recipes that start from GPT-2 get their shape from its weights.
SHAPE = "--n_layer=1 --n_head=2 --n_embd=16"
RUN = ("--block_size=32 --batch_size=2 --gradient_accumulation_steps=2 --max_iters=4 --warmup_iters=1 "
       "--lr_decay_iters=4 --eval_interval=2 --eval_iters=2 --log_interval=1 --compile=False")
SAMPLE = "--num_samples=1 --max_new_tokens=12"
TINY_GPT2_LAYERS = {"gpt2": 1, "gpt2-medium": 2, "gpt2-large": 3, "gpt2-xl": 4}  # each its own shape


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The local stand-in for the Hugging Face hub and HellaSwag's server, for the whole module."""
    root = tmp_path_factory.mktemp("hub")
    hub = FakeHub()
    for name, layers in TINY_GPT2_LAYERS.items():
        torch.manual_seed(layers)
        folder = root / name
        hf.save_pretrained(GPT(GPTConfig(block_size=64, vocab_size=hf.GPT2_VOCAB, n_layer=layers, n_head=2,
                                         n_embd=16)), folder)
        for file in ("config.json", "model.safetensors"):
            hub.files[f"/{hf.GPT2_MODELS[name][0]}/resolve/main/{file}"] = (folder / file).read_bytes()
    tokens = np.random.default_rng(0)
    for shard, count in (("fineweb_val_000000.bin", 4_000), ("fineweb_train_000001.bin", 20_000)):
        data.write_shard(root / shard, tokens.integers(0, hf.GPT2_VOCAB, count))
        hub.files[f"/datasets/kjj0/fineweb10B-gpt2/resolve/main/{shard}"] = (root / shard).read_bytes()
    items = [{"ctx": "A man is sitting on a roof. He", "label": 2,
              "endings": ["is using wrap.", "is ripping tiles off.", "starts pulling up roofing.", "sings."]}] * 4
    hub.files["/hellaswag/hellaswag_val.jsonl"] = "".join(json.dumps(i) + "\n" for i in items).encode()
    records = [{"instruction": f"Name a colour, please ({i}).", "context": "" if i % 2 else "Colours: red, blue.",
                "response": "Blue.", "category": "open_qa"} for i in range(12)]
    records.append({"instruction": "Tell a long story. " * 40, "context": "", "response": "No.", "category": "x"})
    hub.files["/datasets/databricks/databricks-dolly-15k/resolve/main/databricks-dolly-15k.jsonl"] = \
        "".join(json.dumps(r) + "\n" for r in records).encode()
    with serving(hub):
        yield hub


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh copy of what a user clones: the scripts, config/ and assets/ (no data/, no out/)."""
    directory = tmp_path_factory.mktemp("clone")
    for path in REPO.glob("*.py"):
        if not path.name.startswith(("test_", "conftest")):
            shutil.copy(path, directory)
    for folder in ("config", "assets"):
        shutil.copytree(REPO / folder, directory / folder)
    return directory


@pytest.fixture
def user(clone, hub, tmp_path):
    """run(command): one shell-style command line, run in the clone as a user would run it."""
    env = dict(os.environ, HF_ENDPOINT=hub.url, HELLASWAG_BASE_URL=f"{hub.url}/hellaswag",
               GPT_CACHE_DIR=str(tmp_path / "cache"), NO_PROXY="127.0.0.1,localhost")
    env.pop("RANK", None)

    def run(command):
        words = shlex.split(command)
        if words[0] == "torchrun":  # torchrun is python -m torch.distributed.run, one thread each
            words = [sys.executable, "-m", "torch.distributed.run"] + words[1:]
            run_env = dict(env, OMP_NUM_THREADS="1")
        else:
            words = [sys.executable] + words[1:]
            run_env = env
        result = subprocess.run(words, cwd=clone, env=run_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    run.clone, run.hub = clone, hub
    return run


def final_val_loss(clone, out_dir):
    evals = [json.loads(line) for line in (clone / out_dir / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    return evals[-1]["val_loss"]


# --------------------------------------------------------------------------------------------
# The journeys
# --------------------------------------------------------------------------------------------

def test_quick_start_then_sample_evaluate_and_resume(user):
    first = user(f"python train.py {SHAPE} {RUN}")  # makes data/shakespeare_char on the way
    assert "eval iter 4" in first.stdout and (user.clone / "out" / "ckpt.pt").is_file()
    sample = user(f"python sample.py {SAMPLE}")
    assert len(sample.stdout) >= 12  # the prompt (a newline) and 12 characters
    ppl = user("python eval.py perplexity --max_tokens=500 --json")
    assert json.loads(ppl.stdout.splitlines()[-1])["tokens"] >= 500
    resumed = user(f"python train.py --init_from=resume {SHAPE} {RUN.replace('max_iters=4', 'max_iters=6')}")
    assert "resuming from" in resumed.stdout and "eval iter 6" in resumed.stdout


def test_your_own_text(user):
    (user.clone / "my.txt").write_text("It was a bright cold day in April, and the clocks were striking. " * 80)
    user("python prepare.py text --input=my.txt --tokenizer=bpe --vocab_size=300 --name=mytext")
    user(f"python train.py --dataset=mytext --out_dir=out-mytext {SHAPE} {RUN}")
    user(f"python sample.py --out_dir=out-mytext {SAMPLE}")
    user("python eval.py perplexity --out_dir=out-mytext --dataset=mytext")


def test_finetune_gpt2_on_shakespeare(user):
    user("python prepare.py shakespeare")
    user(f"python train.py config/finetune_shakespeare.py {RUN}")
    assert ("GET", "/openai-community/gpt2/resolve/main/model.safetensors", None) in user.hub.requests
    user(f"python sample.py --out_dir=out-shakespeare {SAMPLE}")
    user("python eval.py perplexity --out_dir=out-shakespeare --dataset=shakespeare --max_tokens=2000")


def test_gpt2_from_fineweb_shards_on_one_process_and_with_muon_on_two(user):
    user("python prepare.py fineweb10B --num_shards=1")
    user(f"python train.py config/train_gpt2.py {SHAPE} {RUN}")
    user(f"python sample.py --out_dir=out-gpt2 --start=Hello {SAMPLE}")
    user("python eval.py perplexity --out_dir=out-gpt2 --dataset=fineweb10B --max_tokens=1000")
    user(f"torchrun --standalone --nproc_per_node=2 train.py config/train_gpt2_muon.py {SHAPE} {RUN}")
    user(f"python sample.py --out_dir=out-gpt2-muon {SAMPLE}")


def test_evaluate_gpt2(user):
    user("python prepare.py fineweb10B --num_shards=1")
    user("python prepare.py shakespeare")
    for config in ("config/eval_gpt2.py", "config/eval_gpt2_medium.py", "config/eval_gpt2_large.py",
                   "config/eval_gpt2_xl.py"):
        result = user(f"python train.py {config} --batch_size=2 --block_size=32 --eval_iters=2")
        assert "val perplexity" in result.stdout
    assert {path for _, path, _ in user.hub.requests if path.endswith("model.safetensors")} == {
        f"/{repo}/resolve/main/model.safetensors" for repo, _ in hf.GPT2_MODELS.values()}
    user("python eval.py perplexity --init_from=gpt2 --dataset=shakespeare --max_tokens=500")
    hellaswag = user("python eval.py hellaswag --init_from=gpt2 --limit=4 --json")
    assert json.loads(hellaswag.stdout.splitlines()[-1])["n"] == 4
    user(f"python sample.py --init_from=gpt2 --start=Hello --stop_at_eot=True {SAMPLE}")


def test_finetune_gpt2_xl_with_fsdp(user):
    user("python prepare.py shakespeare")
    user(f"torchrun --standalone --nproc_per_node=2 train.py config/finetune_gpt2xl_fsdp.py {RUN}")
    assert (user.clone / "out-shakespeare-xl" / "ckpt.json").is_file()  # sharded
    user(f"python sample.py --out_dir=out-shakespeare-xl {SAMPLE}")
    user("python eval.py perplexity --out_dir=out-shakespeare-xl --dataset=shakespeare --max_tokens=1000")


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_quick_start_under_torchrun(user, parallel):
    out_dir = f"out-{parallel}"
    user(f"torchrun --standalone --nproc_per_node=2 train.py --parallel={parallel} --out_dir={out_dir} "
         f"{SHAPE} {RUN}")
    assert np.isfinite(final_val_loss(user.clone, out_dir))
    user(f"python sample.py --out_dir={out_dir} {SAMPLE}")
    user(f"python eval.py perplexity --out_dir={out_dir} --max_tokens=500")


def test_the_baby_gpt_and_the_adamw_quick_start(user):
    user(f"python train.py config/train_shakespeare_char.py {SHAPE} {RUN}")
    user(f"python sample.py --out_dir=out-shakespeare-char {SAMPLE}")
    user(f"python train.py config/quickstart_adamw.py {SHAPE} {RUN}")
    user(f"python sample.py --out_dir=out-adamw {SAMPLE}")


def test_teach_the_quick_start_to_spell_then_chat_and_finetune_on_your_own_conversations(user):
    run = RUN.replace("--block_size=32", "--block_size=64")  # a spelling conversation needs up to 40 tokens
    user(f"python train.py --out_dir=out-base {SHAPE} {run}")
    user(f"python train.py config/sft_spelling.py --init_dir=out-base {run}")  # makes data/spelling_char
    score = user("python eval.py task --out_dir=out-spelling --limit=16 --json")
    assert json.loads(score.stdout.splitlines()[-1])["n"] == 16
    answer = user('python chat.py --out_dir=out-spelling --prompt="spell brother" --max_new_tokens=8')
    assert len(answer.stdout.splitlines()) == 1  # the answer alone: the rest went to stderr
    talks = [[{"role": "user", "content": "What light through yonder window breaks?"},
              {"role": "assistant", "content": "It is the east"}]] * 20
    (user.clone / "talks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in talks))
    user("python prepare.py chat --input=talks.jsonl --tokenizer_of=shakespeare_char --block_size=64")
    user(f"python train.py --init_from=checkpoint --init_dir=out-base --dataset=talks --out_dir=out-talks {run}")
    user("python eval.py task --out_dir=out-talks --conversations=talks.jsonl --limit=4")


def test_gpt2_learns_to_follow_instructions_from_dolly(user):
    prepared = user("python prepare.py dolly --block_size=64")
    assert "1 skipped as longer than 65 tokens" in prepared.stdout  # the long record: counted, not hidden
    user(f"python train.py config/sft_gpt2_dolly.py {RUN.replace('--block_size=32', '--block_size=64')}")
    assert ("GET", "/openai-community/gpt2/resolve/main/model.safetensors", None) in user.hub.requests
    answer = user('python chat.py --out_dir=out-dolly --prompt="Name a colour." --max_new_tokens=4')
    assert len(answer.stdout.splitlines()) == 1


def test_bench_modes(user):
    train = user("python bench.py --preset=quickstart --warmup_iters=1 --iters=2 --json")
    assert json.loads(train.stdout.splitlines()[-1])["optimizer"] == "muon"  # the quick start's own
    user("python bench.py --preset=baby --batch_size=1 --block_size=32 --warmup_iters=1 --iters=2")
    generate = user("python bench.py --mode=generate --preset=quickstart --max_new_tokens=8 --repeats=1 --json")
    assert json.loads(generate.stdout.splitlines()[-1])["same_tokens"]
    user("python bench.py --mode=memory --preset=quickstart --block_size=8")
    recipe = user.clone / "tiny_recipe.py"  # bench's recipes mode takes any config file: a small one
    recipe.write_text("n_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 32\nbatch_size = 2\nmax_iters = 4\n"
                      "warmup_iters = 1\nlr_decay_iters = 4\neval_interval = 2\neval_iters = 2\n")
    recipes = user(f"python bench.py --mode=recipes --recipes={recipe.name} --repeats=2 --json "
                   f"--record_dir=bench-record")
    assert json.loads(recipes.stdout.splitlines()[-1])["recipes"][recipe.name]["steps"] == 4
    assert (user.clone / "bench-record" / "summary.json").is_file()


def test_every_config_file_has_a_journey():
    configs = {f"config/{path.name}" for path in (REPO / "config").glob("*.py")}
    in_journeys = set(re.findall(r"config/\w+\.py", Path(__file__).read_text(encoding="utf-8")))
    assert configs - in_journeys == set(), "config files that no journey runs: add one to test_journeys.py"
