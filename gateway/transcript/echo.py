"""The submitted config as jobs echo it: what was sent, cut to what the official client can
read back (api-reference §5.2). The client rebuilds the echo into strict dataclasses, and a
key it does not know inside a known section makes `get_job_info`/`list_jobs` raise, for
every later caller. Unknown top-level keys it ignores, so they stay. Processing always sees
the whole config; only the echo is cut.
"""

from __future__ import annotations

from typing import Any

# Section -> the keys the client accepts in it. None: any content (passed through untouched).
_SECTIONS: dict[str, frozenset[str] | None] = {
    "transcription_config": frozenset({
        "language", "model", "operating_point", "output_locale", "diarization", "additional_vocab",
        "punctuation_overrides", "domain", "enable_entities", "speaker_diarization_config",
        "channel_diarization_labels", "enable_partials", "max_delay", "max_delay_mode",
        "transcript_filtering_config", "audio_filtering_config", "language_hints", "language_hints_strict"}),
    "fetch_data": frozenset({"url", "auth_headers"}),
    "tracking": frozenset({"title", "reference", "tags"}),
    "output_config": frozenset({"generate_lattice", "srt_overrides"}),
    "translation_config": frozenset({"target_languages", "enable_partials"}),
    "language_identification_config": frozenset({"expected_languages"}),
    "summarization_config": frozenset({"content_type", "summary_length", "summary_type"}),
    "sentiment_analysis_config": frozenset({"enable_sentiment"}),
    "topic_detection_config": frozenset({"topics"}),
    "auto_chapters_config": frozenset({"enable_chapters"}),
    "audio_events_config": frozenset({"types"}),
    "alignment_config": frozenset({"language"}),
}
_NESTED = {  # dict-valued keys inside transcription_config whose keys the client also checks
    "transcript_filtering_config": frozenset({"remove_disfluencies", "replacements"}),
    "audio_filtering_config": frozenset({"volume_threshold"}),
}
_NOTIFICATION = frozenset({"url", "contents", "auth_headers", "method"})


def _cut(value: Any, keys: frozenset[str]) -> dict[str, Any] | None:
    return {k: v for k, v in value.items() if k in keys} if isinstance(value, dict) else None


def client_safe(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if value is None:
            continue  # a top-level null breaks the client
        if key == "notification_config":
            value = [_cut(n, _NOTIFICATION) for n in value if isinstance(n, dict)] if isinstance(value, list) else None
        elif key in _SECTIONS:
            value = _cut(value, _SECTIONS[key])
        if value is None:
            continue
        out[key] = value
    tc = out.get("transcription_config")
    if tc is not None:
        for key, keys in _NESTED.items():
            if key in tc:
                nested = _cut(tc[key], keys)
                if nested is None:
                    del tc[key]
                else:
                    tc[key] = nested
        if "model" in tc and "operating_point" in tc:  # the client refuses both; model wins
            del tc["operating_point"]
    return out
