"""A closed-vocabulary word-level tokenizer for the embedded PaliGemma default (no download needed).

Words are lower-cased; `?`, `,` and `.` are tokens of their own. The vocabulary holds the words of the
spatial questions and captions (rls3_jax.prompts), of the object-naming pretraining task and of the object
names it is built with; a word outside it is an error, never a silent <unk>. Special ids follow Gemma's
order (pad 0, eos 1, bos 2) plus the image placeholder and the newline separator of PaliGemma's prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

SPECIALS = ("<pad>", "<eos>", "<bos>", "<image>", "\n")
# Every word the question/caption templates, the rubric's terms and the naming task can produce.
TEMPLATE_WORDS = (
    "what is the position of relative to ? above below behind in front left right and , . "
    "which objects are image a an detect ;"
).split()
# PaliGemma's location tokens (rls3_jax.vlm.paligemma.detection) are single words; so is every other word and mark.
_WORD = re.compile(r"<loc\d{4}>|[a-z0-9]+|[?,.;]")


class WordTokenizer:
    """Maps text to ids over a fixed word list; `encode` raises ValueError on an unknown word."""

    def __init__(self, words: Sequence[str]):
        self.vocab = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.eos_id, self.bos_id, self.image_id, self.newline_id = range(5)

    @classmethod
    def for_objects(cls, object_names: Iterable[str], location_tokens: bool = False) -> WordTokenizer:
        """The template words and the objects' names; `location_tokens` adds PaliGemma's 1024 <locYYYY>."""
        words = list(TEMPLATE_WORDS)
        for name in object_names:
            words += _WORD.findall(name.lower())
        if location_tokens:
            from rls3_jax.vlm.paligemma.detection import LOC_TOKENS

            words += LOC_TOKENS
        return cls(words)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        out = []
        for word in _WORD.findall(text.lower()):
            if word not in self.ids:
                raise ValueError(f"word {word!r} of {text!r} is not in the word tokenizer's closed vocabulary")
            out.append(self.ids[word])
        rest = _WORD.sub("", text.lower()).strip()
        if rest:
            raise ValueError(f"characters {rest!r} of {text!r} cannot be tokenized by the word tokenizer")
        return out

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i in (self.pad_id, self.eos_id, self.bos_id, self.image_id):
                continue
            word = self.vocab[i] if 0 <= i < len(self.vocab) else "<unk>"
            glued = word in "?,.\n" or (word.startswith("<loc") and words[-1:] and words[-1].endswith(">"))
            if words and glued:
                words[-1] += word
            else:
                words.append(word)
        return " ".join(words)

    def to_json(self) -> str:
        return json.dumps({"words": self.vocab[len(SPECIALS) :]})

    @classmethod
    def from_json(cls, text: str) -> WordTokenizer:
        return cls(json.loads(text)["words"])
