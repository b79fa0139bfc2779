"""
Tests that compare our GPT-2 with Hugging Face's: checkpoints written by `transformers` load with
identical logits, ours load in `transformers`, and GPT-2 downloads from the (fake, local) hub.

`transformers` is only the reference implementation here, a test-only dependency
(requirements-dev.txt): without it this file is skipped as a whole, and test_model.py, the
model's own tests, still runs.
"""

import pytest
import torch

import hf
from model import GPT, GPTConfig

transformers = pytest.importorskip(
    "transformers",
    reason="the Hugging Face comparisons need the reference GPT-2 from `transformers`, a test-only "
           "dependency: pip install -r requirements-dev.txt")


# ---------------------------------------------------------------------------- Hugging Face parity

def hf_model(n_layer=2, n_head=4, n_embd=64, vocab_size=100, n_positions=32):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                                     vocab_size=vocab_size, n_positions=n_positions,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # HF inits biases and LayerNorms to constants: randomise them too
        for name, p in model.named_parameters():
            if "ln_" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def max_logit_diff(ours, theirs, vocab_size, T=32):
    idx = torch.randint(0, vocab_size, (2, T))
    with torch.no_grad():
        return (ours(idx)[0] - theirs(idx).logits).abs().max().item()


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_hugging_face_checkpoint_loads_with_identical_logits(tmp_path, use_sdpa):
    theirs = hf_model()
    theirs.save_pretrained(tmp_path)
    ours = hf.from_pretrained(str(tmp_path), use_sdpa=use_sdpa).eval()
    assert max_logit_diff(ours, theirs, 100) <= 1e-4


def test_our_save_pretrained_loads_in_hugging_face_with_identical_logits(tmp_path):
    torch.manual_seed(1)
    ours = GPT(GPTConfig(block_size=32, vocab_size=100, n_layer=2, n_head=4, n_embd=64)).eval()
    hf.save_pretrained(ours, tmp_path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert max_logit_diff(ours, theirs, 100) <= 1e-4


def test_gpt2_shape_matches_hugging_face_to_1e_4(tmp_path):
    # The real GPT-2 small shape (random weights: the real ones need the internet).
    theirs = hf_model(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024)
    theirs.save_pretrained(tmp_path)
    ours = hf.from_pretrained(str(tmp_path)).eval()
    assert ours.get_num_params(non_embedding=False) == 124_439_808
    assert max_logit_diff(ours, theirs, 50257, T=64) <= 1e-4


def original_hub_layout(hf):
    """The key layout of the files OpenAI's GPT-2 has on the hub: no 'transformer.' prefix and
    the causal-mask buffers stored as 'h.N.attn.bias'."""
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items()
             if k != "lm_head.weight"}
    n_pos = hf.config.n_positions
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n_pos, n_pos)).view(1, 1, n_pos, n_pos)
    return state


def write_original_layout(theirs, directory):
    from safetensors.torch import save_file
    directory.mkdir(parents=True, exist_ok=True)
    theirs.config.to_json_file(directory / "config.json")
    save_file(original_hub_layout(theirs), directory / "model.safetensors")


def test_original_hub_key_layout_loads_with_identical_logits(tmp_path):
    theirs = hf_model()
    write_original_layout(theirs, tmp_path)
    ours = hf.from_pretrained(str(tmp_path)).eval()
    assert max_logit_diff(ours, theirs, 100) <= 1e-4


# ---------------------------------------------------------------------------- hub download

def serve_as_gpt2(fake_hub, theirs, tmp_path):
    """Serve a small random GPT-2 under the 'gpt2' hub name (the real one is 500 MB)."""
    write_original_layout(theirs, tmp_path / "src")
    base = "/openai-community/gpt2/resolve/main"
    for name in ("config.json", "model.safetensors"):
        fake_hub.files[f"{base}/{name}"] = (tmp_path / "src" / name).read_bytes()
    return base


def test_hub_download_works_and_is_cached(fake_hub, tmp_path):
    theirs = hf_model()
    base = serve_as_gpt2(fake_hub, theirs, tmp_path)
    ours = hf.from_pretrained("gpt2").eval()
    assert max_logit_diff(ours, theirs, 100) <= 1e-4
    hf.from_pretrained("gpt2")  # second time: from the cache
    assert fake_hub.count(f"{base}/model.safetensors") == 1
    assert fake_hub.count(f"{base}/config.json") == 1


@pytest.mark.parametrize("failure", ["truncated", "server_error"])
def test_failed_hub_download_is_a_clear_error_and_leaves_nothing(fake_hub, tmp_path, failure):
    from download import DownloadError
    base = serve_as_gpt2(fake_hub, hf_model(), tmp_path)
    if failure == "truncated":
        fake_hub.truncate.add(f"{base}/model.safetensors")
    else:
        fake_hub.status[f"{base}/model.safetensors"] = 500
    with pytest.raises(DownloadError, match="model.safetensors"):
        hf.from_pretrained("gpt2")
    cache = tmp_path / "cache"
    leftovers = [p.name for p in cache.rglob("*") if p.is_file()]
    assert "model.safetensors" not in leftovers
    assert not any(name.endswith(".part") for name in leftovers)
