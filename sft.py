"""
Supervised finetuning (SFT): what turns a model that continues text into one that answers.

- The chat format. Four special tokens mark the turns of a conversation: <|system|>, <|user|>,
  <|assistant|> and <|end|>. They are appended after the ids of whichever tokenizer the base
  model was trained with (characters, learned BPE or GPT-2's), when finetuning starts, and the
  model grows an embedding row for each (with_chat_tokens). Appending, rather than reserving ids
  in every tokenizer from the start, leaves every base model, dataset and OpenAI's weights exactly
  as they are: a chat model is a base model plus four rows. User text can never produce them:
  they have no spelling in the base tokenizer (encode turns "<|user|>" into ordinary characters
  or BPE tokens, or refuses characters it does not know).
- ChatTokenizer.render: a conversation, [{"role": "user", "content": ...}, ...] (the format of
  Hugging Face and OpenAI), to token ids and a mask that is True exactly on what the assistant
  writes: its words and the <|end|> that closes its turn. SFT trains on those targets only; the
  user's words are context, not something the model should learn to write.
- read_conversations: a JSONL file of conversations, checked line by line (a bad line is an
  error naming its number), each with its line number for later errors.
- The built-in task: spelling a word letter by letter ("spell brother" -> "b-r-o-t-h-e-r"), with
  a deterministic generator over the words of tiny Shakespeare and a held-out split that shares
  no word with the training split (training conversations hold one to three exchanges, as a chat
  keeps earlier ones in context); exact_match scores any checkpoint on conversations with greedy
  decoding.

The data side (the files prepare.py writes, ChatLoader's padded batches) is in data.py; train.py
runs SFT with its one loop (the mask turns the other targets into -1, which the loss skips).
"""

import dataclasses
import random
import re
import zlib

import torch

import engine
from common import UserError
from data import read_jsonl
from model import GPT
from tokenizer import TokenizerError

CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
ROLES = ("system", "user", "assistant")


class ChatFormatError(UserError):
    """A conversation that cannot be rendered: the message says what is wrong with it."""


class ChatTokenizer:
    """A base tokenizer plus the chat tokens, which take the ids right after the base vocabulary."""

    def __init__(self, base):
        self.base = base
        self.name = base.name  # "char", "bpe" or "gpt2": the text is encoded as before
        self.eot_token = base.eot_token
        self.base_vocab_size = base.vocab_size
        self.special = {token: base.vocab_size + i for i, token in enumerate(CHAT_TOKENS)}
        self.vocab_size = base.vocab_size + len(CHAT_TOKENS)
        self.role_token = {role: self.special[f"<|{role}|>"] for role in ROLES}
        self.end_token = self.special["<|end|>"]

    def encode(self, text):
        """Text to ids with the base tokenizer alone: no text ever becomes a chat token."""
        return self.base.encode(text)

    def decode(self, ids):
        """Ids to text, the chat tokens written out as their names (for display)."""
        names = {i: token for token, i in self.special.items()}
        text, run = [], []
        for i in (int(i) for i in ids):
            if i in names:
                text += [self.base.decode(run), names[i]]
                run = []
            else:
                run.append(i)
        return "".join(text) + self.base.decode(run)

    def byte_lengths(self):
        """Bytes of text per id: the chat tokens are no text (0), like <|endoftext|>."""
        return list(self.base.byte_lengths()) + [0] * len(CHAT_TOKENS)

    def render(self, conversation):
        """(ids, mask) of a whole conversation: each turn is its role's token, the encoded
        content and <|end|>; mask is True on the assistant's content tokens and their <|end|>."""
        check_conversation(conversation)
        ids, mask = [], []
        for message in conversation:
            content = self.encode(message["content"])
            learn = message["role"] == "assistant"
            ids += [self.role_token[message["role"]]] + content + [self.end_token]
            mask += [False] + [learn] * (len(content) + 1)  # the role token is given, not learned
        return ids, mask

    def render_prompt(self, conversation):
        """The ids that ask for the assistant's next turn: the conversation so far (ending with a
        user turn) and <|assistant|>. Generation then runs until the model writes <|end|>."""
        check_conversation(conversation, last="user")
        ids = []
        for message in conversation:
            ids += [self.role_token[message["role"]]] + self.encode(message["content"]) + [self.end_token]
        return ids + [self.role_token["assistant"]]


def check_conversation(conversation, last="assistant"):
    """Raise ChatFormatError unless conversation is a list of {"role", "content"} dicts: an
    optional system message first, then user and assistant turns in alternation, non-empty,
    ending with a `last` turn."""
    if not isinstance(conversation, list) or not conversation:
        raise ChatFormatError("a conversation must be a non-empty list of messages")
    expected = "user"
    for n, message in enumerate(conversation):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
            raise ChatFormatError(f"message {n + 1} must be an object with a role and a content")
        role, content = message["role"], message.get("content")
        if role not in ROLES:
            raise ChatFormatError(f"message {n + 1} has role {role!r}; use one of {', '.join(ROLES)}")
        if role == "system" and n == 0:
            pass
        elif role != expected:
            raise ChatFormatError(f"message {n + 1} is a {role} turn where a {expected} turn must come "
                                  "(an optional system message, then user and assistant alternate)")
        else:
            expected = "assistant" if role == "user" else "user"
        if not isinstance(content, str) or not content.strip():
            raise ChatFormatError(f"message {n + 1} ({role}) has an empty content")
    if conversation[-1]["role"] != last:
        raise ChatFormatError(f"the conversation must end with a {last} turn")


def read_conversations(path):
    """The conversations of a JSONL file, one per line, each either a list of messages or an
    object {"messages": [...]}, as [(line number, conversation)]: a line that is not a
    conversation is an error naming its number, and so is, later, one too long to train on."""
    conversations = []
    for n, item in read_jsonl(path, ChatFormatError):
        messages = item.get("messages") if isinstance(item, dict) else item
        try:
            check_conversation(messages)
        except ChatFormatError as e:
            raise ChatFormatError(f"{path}, line {n}: {e}") from None
        conversations.append((n, messages))
    if not conversations:
        raise ChatFormatError(f"{path} holds no conversation")
    return conversations


def render_all(tokenizer, conversations, block_size, where, skip_long=False):
    """Render conversations; one longer than block_size + 1 tokens (the model reads block_size
    and predicts one more) is an error naming where(i), or with skip_long skipped and counted.
    Returns (list of (ids, mask), number skipped)."""
    rendered, skipped = [], 0
    for i, conversation in enumerate(conversations):
        try:
            ids, mask = tokenizer.render(conversation)
        except TokenizerError as e:
            raise ChatFormatError(f"{where(i)}: {e}") from None
        if len(ids) > block_size + 1:
            if skip_long:
                skipped += 1
                continue
            raise ChatFormatError(f"{where(i)}: the conversation is {len(ids)} tokens, longer than the "
                                  f"context of {block_size} + 1; shorten it or use a larger --block_size")
        rendered.append((ids, mask))
    return rendered, skipped


@torch.no_grad()
def with_chat_tokens(model, vocab_size):
    """The model with vocab_size - its vocabulary new token rows, for the chat tokens. Each new
    row starts as the mean of the existing rows: an "average token", so the new tokens' logits
    start level with the others instead of at random, and the first finetuning steps do not have
    to undo a random guess. The output head is tied to the embedding, so it grows with it."""
    old = model.config.vocab_size
    if vocab_size <= old:
        return model
    grown = GPT(dataclasses.replace(model.config, vocab_size=vocab_size), model.activation_checkpointing)
    state = model.state_dict()
    wte = state["transformer.wte.weight"]
    rows = grown.transformer.wte.weight.new_zeros(grown.config.padded_vocab_size, wte.size(1))
    rows[:old] = wte[:old]
    rows[old:vocab_size] = wte[:old].mean(dim=0)
    state["transformer.wte.weight"] = state["lm_head.weight"] = rows
    grown.load_state_dict(state)
    return grown.to(wte.device)


# --------------------------------------------------------------------------------------------
# The built-in task: spelling a word letter by letter
# --------------------------------------------------------------------------------------------

SPELLING_LENGTHS = (3, 10)  # shortest and longest word: "spell " + 10 letters + 19 of answer fit 64


def spelling_words(text):
    """(train words, held-out words) of a text: its distinct lowercase words of 3 to 10 letters,
    sorted, split by a hash of the word, so the split is the same on every machine and no word is
    in both."""
    words = sorted({w for w in re.findall(r"[A-Za-z']+", text)  # whole words: not "edant" of "Pedant"
                    if w.isalpha() and w.islower() and SPELLING_LENGTHS[0] <= len(w) <= SPELLING_LENGTHS[1]})
    held_out = [w for w in words if zlib.crc32(w.encode()) % 10 == 0]  # about one word in ten
    return [w for w in words if zlib.crc32(w.encode()) % 10 != 0], held_out


def spelling_conversation(word):
    return [{"role": "user", "content": f"spell {word}"},
            {"role": "assistant", "content": "-".join(word)}]


def spelling_conversations(text, context=64):
    """{"train": [...], "val": [...]} conversations of the spelling task, from a text's words.
    Validation asks each held-out word alone. Training conversations hold one, two or three
    exchanges in turn, as many as fit the context (in characters, the quick start's tokens), so
    the model also learns to answer the latest question with earlier ones still in its context:
    a chat keeps them there. Each training word is asked once, in a fixed shuffled order."""
    train, held_out = spelling_words(text)
    random.Random(0).shuffle(train)
    exchange = lambda w: 3 * len(w) + 9  # noqa: E731  <|user|>spell w<|end|><|assistant|>w-o-r-d<|end|>
    conversations, current, used = [], [], 0
    for w in train:
        wanted = len(conversations) % 3 + 1  # exchanges in this conversation: 1, 2, 3, 1, ...
        if current and (len(current) == 2 * wanted or used + exchange(w) > context + 1):
            conversations.append(current)
            current, used = [], 0
        current, used = current + spelling_conversation(w), used + exchange(w)
    return {"train": conversations + [current], "val": [spelling_conversation(w) for w in held_out]}


@torch.no_grad()
def exact_match(model, tokenizer, conversations, batch_size=64):
    """Greedy answers to the last user turn of each conversation, scored against its last
    assistant turn: the fraction answered exactly. Returns (accuracy, [(prompt, expected, got)]).
    Prompts of equal length are answered together, in batches (no padding needed)."""
    model.eval()
    prompts = [tokenizer.render_prompt(c[:-1]) for c in conversations]
    answers = [None] * len(conversations)
    by_length = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    for length, indices in by_length.items():
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            longest = max(len(tokenizer.encode(conversations[i][-1]["content"])) for i in batch)
            budget = min(longest + 8, model.config.block_size - length)  # room to overshoot, in the window
            out = engine.generate(model, torch.tensor([prompts[i] for i in batch]), budget,
                                  temperature=0, stop_token=tokenizer.end_token)[:, length:].tolist()
            for i, row in zip(batch, out):
                row = row[:row.index(tokenizer.end_token)] if tokenizer.end_token in row else row
                answers[i] = tokenizer.decode(row)
    results = [(c[-2]["content"], c[-1]["content"], got) for c, got in zip(conversations, answers)]
    return sum(expected == got for _, expected, got in results) / len(results), results
