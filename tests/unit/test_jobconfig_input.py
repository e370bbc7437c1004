"""gateway.transcript.config on hostile JSON: always InvalidRequest (a 400), never another exception."""

from __future__ import annotations

import json

import pytest

from gateway.errors import InvalidRequest
from gateway.transcript.config import MAX_JSON_DEPTH, parse_config, parse_processing_data

GOOD = {"type": "transcription", "transcription_config": {"language": "en"}}


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("text", [
    json.dumps(GOOD)[:-1] + ', "x": ' + "[" * 50000 + "]" * 50000 + "}",  # past msgspec's own limit
    json.dumps(GOOD)[:-1] + ', "tracking": ' + nested(MAX_JSON_DEPTH) + "}",  # past the worker's
    "[" * 3000 + "]" * 3000,
])
def test_deep_configs_are_a_400(text):
    with pytest.raises(InvalidRequest) as caught:
        parse_config(text)
    assert "nests lists and objects" in caught.value.detail


def test_a_config_nested_within_the_limit_is_fine():
    parsed = parse_config(json.dumps({**GOOD, "tracking": json.loads(nested(MAX_JSON_DEPTH - 3))}))
    assert parsed.transcription.language == "en"


@pytest.mark.parametrize("header, why", [
    ("[" * 50000 + "]" * 50000, "nests"),
    ('{"user_id": ' + nested(100) + "}", "nests"),
    ('{"parallel_engines": 1' + "0" * 5000 + "}", "out of range"),
    ('{"parallel_engines": 1e400}', "out of range"),
    ("NaN", "not valid JSON"),
])
def test_hostile_processing_data_is_a_400(header, why):
    with pytest.raises(InvalidRequest) as caught:
        parse_processing_data(header)
    assert why in caught.value.detail, caught.value.detail
