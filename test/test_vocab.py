"""The bundled benchmark vocabularies and ``@name`` references in query strings."""

from __future__ import annotations

import pytest

from zeroseg_ros.core.errors import ConfigError, InvalidQueryError
from zeroseg_ros.core.queries import parse_queries
from zeroseg_ros.core.vocab import (
    ALIASES,
    VOCABULARIES,
    expand_vocab_refs,
    has_background,
    load_vocabulary,
    vocabulary_names,
)

CLASS_COUNTS = {
    "voc21": 21,
    "voc20": 20,
    "context60": 60,
    "context59": 59,
    "coco-object": 81,
    "coco-stuff": 171,
    "cityscapes": 19,
    "ade20k": 150,
    "voc21-clearclip": 21,
    "voc20-clearclip": 20,
    "coco-object-clearclip": 81,
    "background": 26,
}
VOC21_BACKGROUND = (
    "sky|wall|tree|wood|grass|road|sea|river|mountain|sands|desk|bed|building|cloud|lamp|door|window|"
    "wardrobe|ceiling|shelf|curtain|stair|floor|hill|rail|fence"
)


@pytest.mark.parametrize(("name", "count"), CLASS_COUNTS.items())
def test_each_vocabulary_has_its_dataset_class_count(name: str, count: int) -> None:
    assert len(load_vocabulary(name)) == count


def test_every_vocabulary_file_is_listed() -> None:
    assert set(VOCABULARIES) == set(CLASS_COUNTS)


@pytest.mark.parametrize("name", CLASS_COUNTS)
def test_each_vocabulary_parses_as_queries_without_duplicates(name: str) -> None:
    classes = load_vocabulary(name)
    queries = parse_queries(classes)
    assert len(queries) == len(classes)
    assert [q.name for q in queries] == [line.split("|")[0] for line in classes]
    phrases = [phrase for line in classes for phrase in line.split("|")]
    assert all(phrase == phrase.strip() and phrase for phrase in phrases)


def test_background_and_synonym_expansions_follow_the_literature() -> None:
    voc21 = load_vocabulary("voc21")
    assert voc21[0] == VOC21_BACKGROUND
    assert voc21[15] == (
        "person|person in shirt|person in jeans|person in dress|person in sweater|person in skirt|person in jacket"
    )
    assert load_vocabulary("voc20") == voc21[1:]
    assert load_vocabulary("context60")[0] == "background"
    assert load_vocabulary("context60")[1:] == load_vocabulary("context59")
    assert load_vocabulary("coco-object")[0] == VOC21_BACKGROUND
    assert load_vocabulary("coco-object")[1].endswith("|body")
    assert load_vocabulary("voc21-clearclip")[0] == "background"


def test_background_flags() -> None:
    assert [n for n in CLASS_COUNTS if has_background(n)] == [
        "voc21",
        "context60",
        "coco-object",
        "voc21-clearclip",
        "coco-object-clearclip",
    ]


def test_expand_reference_drops_the_background_line() -> None:
    expanded = expand_vocab_refs("@voc21")
    assert expanded == ", ".join(load_vocabulary("voc20"))
    assert "sky" not in expanded.split(", ")[0]


def test_expand_keeps_other_queries_and_their_order() -> None:
    expanded = expand_vocab_refs("traffic cone, @cityscapes, forklift|pallet truck")
    parts = expanded.split(", ")
    assert parts[0] == "traffic cone"
    assert parts[1:-1] == load_vocabulary("cityscapes")
    assert parts[-1] == "forklift|pallet truck"


@pytest.mark.parametrize(
    ("reference", "vocabulary"),
    [("@voc", "voc20"), ("@context", "context59"), ("@ADE20K", "ade20k"), ("@coco-object", "coco-object")],
)
def test_aliases_and_case(reference: str, vocabulary: str) -> None:
    classes = load_vocabulary(vocabulary)
    expected = classes[1:] if has_background(vocabulary) else classes
    assert expand_vocab_refs(reference) == ", ".join(expected)


def test_aliases_point_at_known_vocabularies() -> None:
    assert set(ALIASES.values()) <= set(VOCABULARIES)
    assert set(vocabulary_names()) == set(VOCABULARIES) | set(ALIASES)


def test_text_without_references_is_unchanged() -> None:
    text = "person|pedestrian, mail a@b.c, cone"
    assert expand_vocab_refs(text) == text


def test_segment_everything_through_parse_queries() -> None:
    queries = parse_queries("@coco-stuff")
    assert len(queries) == 171
    assert queries[0].name == "person"


def test_unknown_reference_names_the_known_ones() -> None:
    with pytest.raises(InvalidQueryError, match=r"unknown vocabulary 'nope'.*voc21"):
        expand_vocab_refs("cat, @nope")


@pytest.mark.parametrize("text", ["@voc|car", "red @voc", "@voc dog, cat"])
def test_reference_must_be_a_query_of_its_own(text: str) -> None:
    with pytest.raises(InvalidQueryError, match="must be a query of its own"):
        expand_vocab_refs(text)


def test_load_unknown_vocabulary_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown vocabulary"):
        load_vocabulary("imagenet")
