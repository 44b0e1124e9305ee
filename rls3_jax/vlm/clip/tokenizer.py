"""A closed-vocabulary word-level tokenizer for the embedded default CLIP (no download).

The captions, questions and object lists the project produces use a small, known vocabulary: the spatial
template of `rls3_jax.prompts`, the simulator's object names and a few function words. The word list is
fixed (the token ids are baked into shipped weights): extend it only by appending, and an unknown word is
an error naming the word and the text rather than a silent unknown token.

Sequences are `<bos> words... <eos> <pad>...` like CLIP's BPE tokenizer produces, so the text tower pools
at the first `<eos>`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

PAD, EOS, BOS = "<pad>", "<eos>", "<bos>"
SPECIALS = (PAD, EOS, BOS)

# Function words and the spatial template (prompts.caption / prompts.question / object lists).
_TEMPLATE = """
a an the of is are and to in on at it its this that what where which how relative position
above below behind front left right near next under over top bottom between
, . ? : ; ' -
""".split()
# Colours, materials and sizes that qualify object names.
_QUALIFIERS = """
small large big little tall short round square long wide narrow tiny
red green blue yellow orange purple pink brown black white grey gray silver gold beige cyan teal dark light
wooden wood metal metallic plastic glass ceramic paper leather fabric stone marble steel
empty full open closed old new
""".split()
# Household objects (the simulator's catalogue is a subset) and scene words.
_OBJECTS = """
apple banana orange lemon bread cake cheese egg pear grape tomato carrot pepper onion
bowl plate cup mug glass bottle jar pot pan kettle teapot toaster blender mixer microwave oven stove
fridge refrigerator sink faucet spoon fork knife ladle spatula whisk tray board cutting chopping
basket box bin can lid vase plant flower candle lamp clock book books laptop computer monitor
keyboard mouse phone remote radio speaker television tv camera headphones toy ball cube block
chair stool bench table desk shelf cabinet drawer counter sofa couch bed pillow cushion blanket
towel rug mat curtain picture frame mirror window door wall floor ceiling
soap sponge brush bucket watering jug pitcher thermos flask tin tissue napkin
hat shoe shoes bag backpack umbrella bear teddy doll robot statue figurine trophy
salt shaker coffee maker machine tea wine beer water milk juice sauce cereal
pencil pen cup holder scissors stapler tape notebook folder printer globe
kitchen living room bathroom bedroom office dining studio apartment workshop break
""".split()

WORDS: tuple[str, ...] = tuple(dict.fromkeys(_TEMPLATE + _QUALIFIERS + _OBJECTS))
_SPLIT = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class ClipWordTokenizer:
    """Word-level tokenizer over a fixed vocabulary; `encode` gives CLIP-style fixed-length ids + mask."""

    def __init__(self, words: Sequence[str] = WORDS, max_length: int = 32):
        self.vocab = {w: i for i, w in enumerate(dict.fromkeys((*SPECIALS, *words)))}
        self.max_length = int(max_length)
        self.pad_token_id, self.eos_token_id, self.bos_token_id = (self.vocab[s] for s in SPECIALS)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        return _SPLIT.findall(text.lower())

    def _ids(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            words = self.tokenize(text)
            unknown = [w for w in words if w not in self.vocab]
            if unknown:
                raise ValueError(
                    f"word {unknown[0]!r} of {text!r} is not in the tokenizer's closed vocabulary"
                )
            ids = [self.bos_token_id, *(self.vocab[w] for w in words), self.eos_token_id]
            if len(ids) > self.max_length:
                raise ValueError(
                    f"{text!r} is {len(ids)} tokens long, more than max_length {self.max_length}"
                )
            self._cache[text] = ids
        return ids

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids int32 [N, max_length], attention_mask int32 [N, max_length])."""
        ids = np.full((len(texts), self.max_length), self.pad_token_id, np.int32)
        mask = np.zeros((len(texts), self.max_length), np.int32)
        for i, text in enumerate(texts):
            row = self._ids(text)
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        words = {i: w for w, i in self.vocab.items()}
        return " ".join(
            words[int(i)]
            for i in ids
            if int(i) not in (self.pad_token_id, self.bos_token_id, self.eos_token_id)
        )
