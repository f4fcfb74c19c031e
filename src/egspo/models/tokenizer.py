"""The tiny preset's character tokenizer, built with `tokenizers` and saved as a standard Hugging Face directory.

Every character of ``ALPHABET`` is one token; ``<answer>`` and ``</answer>`` are single added tokens; the special
tokens are ``<|pad|>`` (id 0), ``<|mask|>`` (1), ``<|eos|>`` (2) and ``<|unk|>`` (3). Any other character encodes to
``<|unk|>``. Decoding concatenates tokens with nothing in between, so ``decode(encode(s)) == s`` for every string
over the alphabet (special tokens aside).
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, MASK, EOS, UNK = "<|pad|>", "<|mask|>", "<|eos|>", "<|unk|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, MASK, EOS, UNK)
ANSWER_TOKENS: tuple[str, ...] = ("<answer>", "</answer>")
#: digits, arithmetic / punctuation (space included), lowercase letters: one token each.
ALPHABET: str = string.digits + "+-*/()=.,:; " + string.ascii_lowercase


def build_char_tokenizer(max_len: int = 128) -> PreTrainedTokenizerFast:
    """The character tokenizer as a ``PreTrainedTokenizerFast`` (pad / mask / eos / unk set, no BOS, no
    post-processor: ``tokenizer(text)`` returns exactly one id per character / answer tag)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if len(set(ALPHABET)) != len(ALPHABET):  # guards edits of ALPHABET
        raise ValueError("ALPHABET has repeated characters")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in ALPHABET:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Every single character is its own pre-token ([\s\S] also matches newlines, which then become <|unk|>).
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # join tokens with no separator (the default would insert spaces)
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in ANSWER_TOKENS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        mask_token=MASK,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=max_len,
        padding_side="left",  # prompts are left padded, completions follow them
        clean_up_tokenization_spaces=False,  # would delete spaces before punctuation
    )
    return tok


def save_char_tokenizer(out_dir: str | Path, max_len: int = 128) -> PreTrainedTokenizerFast:
    """Build the tokenizer and ``save_pretrained`` it into ``out_dir`` (created if missing)."""
    tok = build_char_tokenizer(max_len)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return tok


__all__ = ["ALPHABET", "ANSWER_TOKENS", "EOS", "MASK", "PAD", "SPECIAL_TOKENS", "UNK", "build_char_tokenizer",
           "save_char_tokenizer"]
