"""
OpenAI's GPT-2 weights in and out, in the Hugging Face format (config.json + model.safetensors).

    from_pretrained("gpt2")              -> a GPT with OpenAI's 124M weights (downloaded once)
    from_pretrained("path/to/folder")    -> a GPT from any Hugging Face GPT-2 checkpoint folder
    save_pretrained(model, "folder")     -> a folder transformers.GPT2LMHeadModel loads

What lives here: GPT-2's four released sizes (`GPT2_MODELS`: their hub repositories and shapes,
the one place the project names them), the download of a hub model (through download.py: checked,
resumable, HF_ENDPOINT honoured), and the mapping between Hugging Face's key names and layouts and
model.py's (`hf_to_ours`, `ours_to_hf`). A name that is not a model, a folder that is not a GPT-2
checkpoint or a damaged weight file is a `WeightsError`: one line naming the problem and the fix.

model.py names its layers as GPT-2 does, so the mapping is short: OpenAI's "Conv1D" layers store
their matrices transposed, the hub's old files carry causal-mask buffers that are no weights, and
our embedding table has padding rows that the Hugging Face format does not.
"""

import difflib
import json
from pathlib import Path

from common import UserError, write_atomic
from model import GPT, GPTConfig

# OpenAI's four GPT-2 sizes: hub repository (the old names 'gpt2' etc. redirect there) and shape.
# The context is 1024 tokens and the vocabulary 50,257 BPE tokens for all four.
GPT2_MODELS = {
    "gpt2": ("openai-community/gpt2", dict(n_layer=12, n_head=12, n_embd=768)),  # 124M
    "gpt2-medium": ("openai-community/gpt2-medium", dict(n_layer=24, n_head=16, n_embd=1024)),  # 350M
    "gpt2-large": ("openai-community/gpt2-large", dict(n_layer=36, n_head=20, n_embd=1280)),  # 774M
    "gpt2-xl": ("openai-community/gpt2-xl", dict(n_layer=48, n_head=25, n_embd=1600)),  # 1558M
}
GPT2_CONTEXT, GPT2_VOCAB = 1024, 50257


def gpt2_config(name, **overrides):
    """The GPTConfig of one of GPT-2's sizes (bias=True: GPT-2 has biases)."""
    return GPTConfig(**{**dict(block_size=GPT2_CONTEXT, vocab_size=GPT2_VOCAB, bias=True),
                        **GPT2_MODELS[name][1], **overrides})


class WeightsError(UserError):
    """Pretrained weights that cannot be used: an unknown name, an incomplete or damaged folder."""


def check_name_or_path(name_or_path):
    """Refuse, before any work, something that is neither a GPT-2 name nor an existing folder."""
    if name_or_path in GPT2_MODELS or Path(name_or_path).is_dir():
        return
    close = difflib.get_close_matches(name_or_path, GPT2_MODELS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise WeightsError(f"{name_or_path!r} is neither one of {', '.join(GPT2_MODELS)} nor a folder: {hint}"
                       f"give a GPT-2 name or the path of a folder with config.json and model.safetensors")


def from_pretrained(name_or_path, activation_checkpointing=False, **overrides):
    """
    A GPT with GPT-2 weights: a hub name ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'),
    downloaded once into the cache, or a local folder holding a Hugging Face GPT-2 checkpoint
    (config.json + model.safetensors). overrides: GPTConfig settings that leave the weights as
    they are, e.g. dropout=0.1 to finetune.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file  # the format the hub ships: tensors only, safe to load

    check_name_or_path(name_or_path)
    directory = Path(name_or_path) if Path(name_or_path).is_dir() else download_hub_model(name_or_path)
    for required in ("config.json", "model.safetensors"):
        if not (directory / required).is_file():
            raise WeightsError(f"{directory / required} is missing: a Hugging Face GPT-2 checkpoint "
                               f"folder needs config.json and model.safetensors")
    try:
        hf = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        config = GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                           n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True, **overrides)
    except (ValueError, KeyError) as e:  # not JSON, or not a GPT-2 config
        raise WeightsError(f"{directory / 'config.json'} is not a GPT-2 config ({type(e).__name__}: {e})") from None
    try:
        hf_state = load_file(directory / "model.safetensors")
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{directory / 'model.safetensors'} could not be read ({e}); "
                           f"delete it and download it again") from None
    model = GPT(config, activation_checkpointing)
    model.load_state_dict(hf_to_ours(hf_state, model.state_dict(), directory))
    return model


def save_pretrained(model, directory):
    """Write a Hugging Face GPT-2 checkpoint (config.json + model.safetensors) that
    transformers.GPT2LMHeadModel.from_pretrained(directory) loads; each file atomically."""
    from safetensors.torch import save

    cfg = model.config
    if not cfg.bias:
        raise WeightsError("Hugging Face's GPT-2 always has biases; this model has bias=False")
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02, "tie_word_embeddings": True,
        "bos_token_id": 50256, "eos_token_id": 50256,
    }
    directory = Path(directory)
    write_atomic(directory / "model.safetensors", save(ours_to_hf(model.state_dict(), cfg), metadata={"format": "pt"}))
    write_atomic(directory / "config.json", json.dumps(hf_config, indent=2))


def download_hub_model(name):
    """Download config.json and model.safetensors of a hub model once; returns the folder."""
    from download import cache_dir, download, hf_url

    directory = cache_dir() / "models" / name
    for filename in ("config.json", "model.safetensors"):
        download(hf_url(GPT2_MODELS[name][0], filename), directory / filename)
    return directory


# OpenAI's GPT-2 used a "Conv1D" layer that stores weights as (in, out), the transpose of
# nn.Linear's (out, in). These are the weights to transpose when converting.
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_to_ours(hf_state, our_state, source="the checkpoint"):
    """
    Map a Hugging Face GPT-2 state dict onto ours. Reads both layouts: the hub's original files
    (keys like 'h.0.attn.c_attn.weight', plus 'attn.bias' causal-mask buffers) and what current
    transformers writes ('transformer.h.0...' and maybe 'lm_head.weight').
    """
    out = {}
    for key, tensor in hf_state.items():
        key = key.removeprefix("transformer.")
        # Not weights: old files store the causal mask ('attn.bias', 'attn.masked_bias') as
        # buffers, and lm_head.weight is a copy of wte (tied) when present.
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
            continue
        ours = "transformer." + key
        if ours not in our_state:
            raise WeightsError(f"unexpected weight {key!r} in {source}: is it a GPT-2 model?")
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        if ours == "transformer.wte.weight":
            # Our table is padded to a multiple of pad_vocab_to rows; the extra rows stay as
            # initialised (they are never used).
            padded = our_state[ours].clone()
            padded[:tensor.size(0)] = tensor
            tensor = padded
        if tensor.shape != our_state[ours].shape:
            raise WeightsError(f"{key} in {source}: shape {tuple(tensor.shape)} does not match its "
                               f"config.json's {tuple(our_state[ours].shape)}")
        out[ours] = tensor
    missing = set(our_state) - set(out) - {"lm_head.weight"}
    if missing:
        raise WeightsError(f"{source} lacks {sorted(missing)[:5]}: is it a complete GPT-2 model?")
    out["lm_head.weight"] = out["transformer.wte.weight"]  # tied
    return out


def ours_to_hf(our_state, config):
    """The reverse of hf_to_ours, in the layout current transformers writes."""
    out = {}
    for key, tensor in our_state.items():
        if key == "lm_head.weight":
            continue  # tied to wte; Hugging Face re-ties it on load
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        if key == "transformer.wte.weight":
            tensor = tensor[:config.vocab_size]  # drop the padding rows
        out[key] = tensor.detach().contiguous().cpu()
    return out
