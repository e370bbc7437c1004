"""The `*_errors` metadata for options this worker accepts but does not implement: never
ignored silently."""

from __future__ import annotations

import msgspec

from gateway.transcript import rewrites
from gateway.transcript.config import JobConfig, TranscriptionConfig
from gateway.transcript.model import FeatureError


class FeatureErrors(msgspec.Struct):
    """The metadata `*_errors` lists for what a job asked for and did not get."""

    translation: list[FeatureError] = msgspec.field(default_factory=list)
    summarization: list[FeatureError] = msgspec.field(default_factory=list)
    sentiment_analysis: list[FeatureError] = msgspec.field(default_factory=list)
    topic_detection: list[FeatureError] = msgspec.field(default_factory=list)
    auto_chapters: list[FeatureError] = msgspec.field(default_factory=list)
    audio_events: list[FeatureError] = msgspec.field(default_factory=list)
    transcription: list[FeatureError] = msgspec.field(default_factory=list)


def _unsupported(what: str) -> FeatureError:
    return FeatureError(type="unsupported_feature", message=f"{what} is not supported by this worker")


def feature_errors(config: JobConfig, tc: TranscriptionConfig, language: str) -> FeatureErrors:
    errors = FeatureErrors()
    if config.summarization_config is not None:
        errors.summarization.append(_unsupported("summarization"))
    if config.sentiment_analysis_config is not None:
        errors.sentiment_analysis.append(_unsupported("sentiment analysis"))
    if config.topic_detection_config is not None:
        errors.topic_detection.append(_unsupported("topic detection"))
    if config.auto_chapters_config is not None:
        errors.auto_chapters.append(_unsupported("auto chapters"))
    if config.audio_events_config is not None:
        errors.audio_events.append(_unsupported("audio event detection"))
    if tc.enable_entities:
        errors.transcription.append(_unsupported("enable_entities (entity results)"))
    if tc.domain:
        errors.transcription.append(_unsupported(f"domain {tc.domain!r}"))
    if tc.output_locale and not (tc.output_locale in rewrites.LOCALES and language == "en"):
        errors.transcription.append(FeatureError(
            type="unsupported_locale",
            message=f"output_locale {tc.output_locale!r} is not supported for language {language!r} "
                    f"(supported: {', '.join(rewrites.LOCALES)} for en)"))
    if config.translation_config is not None:
        for target in config.translation_config.target_languages:
            if target != "en":
                errors.translation.append(FeatureError(
                    type="unsupported_target_language",
                    message=f"translation into {target!r} is not supported: Whisper translates into English only"))
    return errors
