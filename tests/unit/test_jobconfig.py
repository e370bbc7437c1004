"""gateway.transcript.config: the job config as the API documents it, parsed and checked."""

from __future__ import annotations

import json

import pytest

from gateway.errors import InvalidRequest
from gateway.transcript.config import parse_config, parse_processing_data


def config(**transcription) -> str:
    return json.dumps({"type": "transcription", "transcription_config": {"language": "en", **transcription}})


def test_operating_point_model_and_defaults():
    parsed = parse_config(config())
    assert (parsed.model, parsed.transcription.diarization, parsed.transcription.language) == ("standard", "none", "en")
    assert parse_config(config(operating_point="enhanced")).model == "enhanced"
    assert parse_config(config(model="enhanced")).model == "enhanced"


def test_unknown_fields_are_ignored_and_the_config_is_echoed():
    parsed = parse_config(json.dumps({"type": "transcription", "surprise": 1,
                                      "transcription_config": {"language": "en", "domain": None, "x": [1]}}))
    assert parsed.echo["transcription_config"]["language"] == "en" and parsed.transcription.domain is None


@pytest.mark.parametrize("text, kind, why", [
    (config(model="huge"), "Requested product not available", "'huge' is not available"),
    (config(language="xx"), "Requested product not available", "'xx' is not supported"),
    (json.dumps({"type": "alignment"}), "Job is not of type transcription", "unsupported job type"),
    (json.dumps({"type": "transcription"}), "No language selected", "transcription_config is required"),
    ("[]", "Job rejected", "must be a JSON object"),
    (config(diarization="sideways"), "Job rejected", "config is invalid"),
])
def test_bad_configs_say_what_is_wrong(text, kind, why):
    with pytest.raises(InvalidRequest) as caught:
        parse_config(text)
    assert caught.value.kind == kind and why in caught.value.detail, caught.value.detail


def test_processing_data():
    assert parse_processing_data(None).engines == 1
    data = parse_processing_data('{"parallel_engines": 3, "user_id": "alice"}')
    assert (data.engines, data.user_id) == (3, "alice")
    with pytest.raises(InvalidRequest):
        parse_processing_data('{"parallel_engines": 0}')
