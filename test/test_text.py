"""Query parsing, prompt templates, trimmed text encoding and the embedding cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zeroseg_ros.core.errors import InvalidQueryError
from zeroseg_ros.core.queries import Query, parse_queries
from zeroseg_ros.core.text import TEMPLATES, TextEncoder, encode_text_trimmed


def test_parse_splits_labels_and_synonyms_and_normalises_spaces():
    assert parse_queries(" person | pedestrian ,traffic   cone, door handle") == [
        Query("person", ("person", "pedestrian")),
        Query("traffic cone", ("traffic cone",)),
        Query("door handle", ("door handle",)),
    ]


def test_parse_accepts_a_list_and_drops_repeated_synonyms():
    assert parse_queries(["car|auto|car", "bus"]) == [Query("car", ("car", "auto")), Query("bus", ("bus",))]


def test_parse_expands_vocabulary_references():
    queries = parse_queries("@voc, traffic cone")
    assert len(queries) == 21 and queries[-1].name == "traffic cone"


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        ("", "blank label"),
        ([], "no queries"),
        ("cat, , dog", "blank label"),
        ("cat|", "blank synonym"),
        ("???", "no letters or digits"),
        ("x" * 201, "too long"),
        ("cat, Cat", "given twice"),
        ([b"cat"], "must be strings"),
    ],
)
def test_parse_rejects_bad_queries_with_a_clear_message(queries, message):
    with pytest.raises(InvalidQueryError, match=message):
        parse_queries(queries)


def test_template_sets():
    assert len(TEMPLATES["imagenet80"]) == 80
    assert all(template.count("{}") == 1 for templates in TEMPLATES.values() for template in templates)


def test_trimmed_text_encoding_equals_open_clip_encode_text(vit_b16):
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-16")(["a photo of a cat.", "a bad photo of the traffic cone."])
    torch.testing.assert_close(encode_text_trimmed(vit_b16, tokens), vit_b16.encode_text(tokens), rtol=1e-5, atol=1e-5)


def test_trimmed_text_encoding_in_bf16_agrees_with_open_clip_encode_text(vit_b16):
    import copy

    import open_clip

    model = copy.deepcopy(vit_b16).to(torch.bfloat16)
    tokens = open_clip.get_tokenizer("ViT-B-16")(["a photo of a cat.", "a bad photo of the traffic cone."] * 4)
    ours, theirs = encode_text_trimmed(model, tokens).float(), model.encode_text(tokens).float()
    assert F.cosine_similarity(ours, theirs, dim=-1).min() > 0.999


def test_encoding_is_normalised_mean_over_templates_and_cached(vit_b16):
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    encoder = TextEncoder(vit_b16, tokenizer, torch.device("cpu"), templates="short")
    first = encoder.encode(["cat", "dog"])
    assert (encoder.misses, encoder.hits) == (2, 0)

    prompts = [template.format("dog") for template in TEMPLATES["short"]]
    expected = F.normalize(F.normalize(vit_b16.encode_text(tokenizer(prompts)), dim=-1).mean(0), dim=0)
    torch.testing.assert_close(first[1], expected, rtol=1e-5, atol=1e-5)

    again = encoder.encode(["dog", "cat", "bird"])
    assert (encoder.misses, encoder.hits) == (3, 2)
    torch.testing.assert_close(again[:2], first.flip(0))

    encoder.set_templates("none")
    encoder.encode(["dog"])
    assert encoder.misses == 4  # a new template set invalidates the cache


def test_cache_is_bounded(vit_b16):
    import open_clip

    encoder = TextEncoder(vit_b16, open_clip.get_tokenizer("ViT-B-16"), torch.device("cpu"), "none", cache_size=3)
    encoder.encode(["a", "b", "c", "d"])
    assert len(encoder._cache) == 3
    encoder.encode(["d"])
    assert encoder.hits == 1
