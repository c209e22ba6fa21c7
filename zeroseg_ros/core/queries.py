"""Query strings: labels to segment and background words, read by one set of rules.

A query string is a comma-separated list of labels; a label may carry synonyms separated by ``|``
(``"person|pedestrian, traffic cone"``); ``@name`` stands for a bundled vocabulary (``core/vocab``). The
``background_words`` setting is read by the same rules. A frame carries at most ``max_queries`` labels, and a
query wins over a background word of the same name (the user asked for it explicitly): both rules live here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zeroseg_ros.core.errors import ConfigError, InvalidQueryError
from zeroseg_ros.core.vocab import expand_background_words, expand_vocab_refs

MAX_PHRASE_CHARS = 200


@dataclass(frozen=True)
class Query:
    """One label to segment: ``name`` is shown to the user, ``synonyms`` (name first) are what CLIP reads."""

    name: str
    synonyms: tuple[str, ...]


def parse_queries(queries: str | Sequence[str]) -> list[Query]:
    """Parse ``"a|b, c"`` (or ``["a|b", "c"]``) into queries; ``@name`` expands a bundled vocabulary.

    Raises ``InvalidQueryError`` for an empty list, a blank label or synonym, a phrase without letters or
    digits, one longer than ``MAX_PHRASE_CHARS`` characters, or a label given twice.
    """
    items = [queries] if isinstance(queries, str) else list(queries)
    if any(not isinstance(item, str) for item in items):
        raise InvalidQueryError(f"queries must be strings, got {_shorten(queries)!r}")
    expanded = [part for item in items for part in expand_vocab_refs(item).split(",")]

    parsed: list[Query] = []
    seen: set[str] = set()
    for item in expanded:
        synonyms = tuple(" ".join(phrase.split()) for phrase in item.split("|"))
        if not item.strip():
            raise InvalidQueryError(f"blank label in queries {_shorten(queries)!r}: remove the empty entry")
        for phrase in synonyms:
            _check_phrase(phrase, item)
        name = synonyms[0]
        if name.lower() in seen:
            raise InvalidQueryError(f"label {name!r} is given twice in queries {_shorten(queries)!r}")
        seen.add(name.lower())
        parsed.append(Query(name=name, synonyms=tuple(dict.fromkeys(synonyms))))
    if not parsed:
        raise InvalidQueryError("no queries given: publish labels such as 'person, traffic cone'")
    return parsed


def _check_phrase(phrase: str, item: str) -> None:
    if not phrase:
        raise InvalidQueryError(f"blank synonym in {item.strip()!r}: '|' must separate non-empty phrases")
    if len(phrase) > MAX_PHRASE_CHARS:
        raise InvalidQueryError(
            f"phrase of {len(phrase)} characters is too long (at most {MAX_PHRASE_CHARS}): {_shorten(phrase)!r}"
        )
    if not any(character.isalnum() for character in phrase):
        raise InvalidQueryError(f"phrase {phrase!r} has no letters or digits")


def _shorten(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_label_count(queries: Sequence[Query], max_queries: int) -> None:
    """Raises ``InvalidQueryError`` when ``queries`` hold more labels than ``max_queries`` (synonyms and
    background words do not count)."""
    if len(queries) > max_queries:
        raise InvalidQueryError(
            f"{len(queries)} queries exceed max_queries ({max_queries}); segment fewer labels at a time"
        )


def parse_background_words(text: str) -> tuple[str, ...]:
    """The ``background_words`` setting from its text: blank for none, else a comma-separated list read by the
    rules of ``parse_queries`` (no blank entry, non-empty synonyms, letters or digits in every phrase, known
    ``@vocabularies``, no word twice). The entries are returned as written (``@background`` unexpanded)."""
    if not text.strip():
        return ()
    words = tuple(word.strip() for word in text.split(","))
    check_background_words(words)
    return words


def check_background_words(words: Sequence[str]) -> None:
    """Raises ``ConfigError`` when ``words`` break the rules of ``parse_queries``."""
    if any(not isinstance(word, str) for word in words):
        raise ConfigError(f"background_words must be strings, got {_shorten(words)!r}")
    if not words:
        return
    try:
        parse_queries(list(words))
    except InvalidQueryError as error:
        raise ConfigError(f"background_words: {error}") from None


def scene_words(queries: Sequence[Query], background_words: Sequence[str]) -> list[str]:
    """The background phrases scored against ``queries``: ``background_words`` with ``@vocabularies`` expanded,
    less every phrase a query names (case-insensitive): a query wins over a background word of the same name."""
    named = {phrase.lower() for query in queries for phrase in query.synonyms}
    return [word for word in expand_background_words(background_words) if word.lower() not in named]
