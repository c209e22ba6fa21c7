"""Ready-made class vocabularies of the standard segmentation benchmarks.

Each ``<name>.txt`` next to this file holds one class per line, in the dataset's label order, with synonyms
separated by ``|`` exactly as the query syntax of :func:`zeroseg_ros.core.queries.parse_queries` expects; ``#`` lines
are comments (the source of the wording). The words are those the training-free papers used for their
published numbers, so the evaluation and the robot speak the same vocabulary.

In a query string, ``@name`` stands for a whole vocabulary ("segment everything"): ``"@voc, traffic cone"``.
A vocabulary whose first line is a background class contributes its classes without that line, because the
segmenter already reports background as label 0.

``background`` is not a dataset: it holds generic scene words (sky, wall, floor, ...) and is the segmenter's
default ``background_words`` ("@background"), so that a lone query competes with the scene around it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources

from zeroseg_ros.core.errors import ConfigError, InvalidQueryError

# name -> whether the first line is the dataset's background class
VOCABULARIES: dict[str, bool] = {
    "voc21": True,
    "voc20": False,
    "context60": True,
    "context59": False,
    "coco-object": True,
    "coco-stuff": False,
    "cityscapes": False,
    "ade20k": False,
    "voc21-clearclip": True,
    "voc20-clearclip": False,
    "coco-object-clearclip": True,
    "background": False,
}
ALIASES: dict[str, str] = {"voc": "voc20", "context": "context59"}

# '@' starts a reference only at the start of a word, so "a@b" stays plain text.
_REFERENCE = re.compile(r"(?<![\w@-])@([A-Za-z0-9][A-Za-z0-9-]*)")


def vocabulary_names() -> tuple[str, ...]:
    """Every name ``load_vocabulary`` and ``@name`` accept, aliases included."""
    return (*VOCABULARIES, *ALIASES)


def _canonical(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in VOCABULARIES:
        raise ConfigError(f"unknown vocabulary {name!r}; known: {', '.join(vocabulary_names())}")
    return key


@functools.cache
def _read(name: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    classes = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        synonyms = [word.strip() for word in line.split("|")]
        if any(not word or "," in word for word in synonyms):
            raise ConfigError(f"vocabulary {name}.txt line {number}: blank synonym or comma in {line!r}")
        classes.append("|".join(synonyms))
    return tuple(classes)


def load_vocabulary(name: str) -> list[str]:
    """All classes of a vocabulary in label order (background line included), each as ``"a|b|c"``."""
    return list(_read(_canonical(name)))


def has_background(name: str) -> bool:
    """Whether the first class of the vocabulary is the dataset's background class."""
    return VOCABULARIES[_canonical(name)]


def expand_vocab_refs(text: str) -> str:
    """Replace each ``@name`` in a comma-separated query string by that vocabulary's classes.

    ``"@voc, traffic cone"`` becomes ``"aeroplane, bicycle, ..., traffic cone"``. Raises
    ``InvalidQueryError`` when a reference is unknown (naming the known ones) or is not a query of its own
    (``"@voc|car"``, ``"red @voc"``).
    """

    def classes(match: re.Match[str]) -> str:
        before, after = text[: match.start()].rstrip(), text[match.end() :].lstrip()
        if (before and not before.endswith(",")) or (after and not after.startswith(",")):
            raise InvalidQueryError(f"in queries {text!r}: {match.group(0)} must be a query of its own, between commas")
        try:
            name = _canonical(match.group(1))
        except ConfigError as error:
            raise InvalidQueryError(f"in queries {text!r}: {error}") from None
        lines = _read(name)
        return ", ".join(lines[1:] if VOCABULARIES[name] else lines)

    return _REFERENCE.sub(classes, text)


def expand_background_words(words: Sequence[str]) -> tuple[str, ...]:
    """Background words with each ``"@name"`` replaced by every phrase of that vocabulary (synonyms included),
    repeats dropped: ``("@background", "carpet")`` -> ``("sky", "wall", ..., "fence", "carpet")``. Raises
    ``ConfigError`` naming the known vocabularies when a reference is unknown."""
    phrases: list[str] = []
    for word in words:
        word = word.strip()
        if word.startswith("@"):
            phrases.extend(phrase for line in _read(_canonical(word[1:])) for phrase in line.split("|"))
        else:  # "a|b": synonyms, each a phrase of its own, as in a query
            phrases.extend(" ".join(phrase.split()) for phrase in word.split("|"))
    return tuple(dict.fromkeys(phrases))
