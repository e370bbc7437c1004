"""The submitted job config and X-SM-Processing-Data header, parsed into typed structs.

The config is echoed back exactly as sent (minus top-level nulls, which break the official
client); processing reads only the typed view. Unknown keys are accepted and ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import InvalidRequest
from gateway.transcript import languages, rewrites
from gateway.transcript.echo import client_safe

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class SrtOverrides(msgspec.Struct):
    max_line_length: PositiveInt = 37
    max_lines: PositiveInt = 2


class OutputConfig(msgspec.Struct):
    srt_overrides: SrtOverrides | None = None
    generate_lattice: bool | None = None


Sensitivity = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
ChannelLabel = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._]+$")]
MAX_IDENTIFIERS = 50


class KnownSpeaker(msgspec.Struct):
    label: Annotated[str, msgspec.Meta(min_length=1)]
    speaker_identifiers: Annotated[list[str], msgspec.Meta(min_length=1)]


class SpeakerDiarizationConfig(msgspec.Struct):
    speaker_sensitivity: Sensitivity | None = None
    speakers_sensitivity: Sensitivity | None = None  # the spelling of the speaker-ID docs page
    prefer_current_speaker: bool = False
    # Realtime's cap on the number of speakers (§8.2); batch clients may send it too, and it
    # holds here as well.
    max_speakers: Annotated[int, msgspec.Meta(ge=2, le=100)] | None = None
    get_speakers: bool = False
    speakers: list[KnownSpeaker] | None = None

    @property
    def sensitivity(self) -> float:
        value = self.speaker_sensitivity if self.speaker_sensitivity is not None else self.speakers_sensitivity
        return 0.5 if value is None else value


class VocabEntry(msgspec.Struct):
    content: Annotated[str, msgspec.Meta(min_length=1)]
    sounds_like: list[str] | None = None


class PunctuationOverrides(msgspec.Struct):
    sensitivity: Sensitivity = 0.5
    permitted_marks: list[str] | None = None  # single marks, or "all"; [] -> no punctuation


class Replacement(msgspec.Struct):
    from_: str = msgspec.field(name="from")
    to: str


class TranscriptFilteringConfig(msgspec.Struct):
    remove_disfluencies: bool = False
    replacements: list[Replacement] | None = None


class AudioFilteringConfig(msgspec.Struct):
    volume_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)] = 0.0


MAX_VOCAB = 1000


class TranscriptionConfig(msgspec.Struct):
    language: str
    model: str | None = None
    operating_point: str | None = None
    diarization: Literal["none", "speaker", "channel"] = "none"
    speaker_diarization_config: SpeakerDiarizationConfig | None = None
    channel_diarization_labels: list[ChannelLabel] | None = None
    output_locale: str | None = None
    additional_vocab: Annotated[list[VocabEntry | str], msgspec.Meta(max_length=MAX_VOCAB)] | None = None
    punctuation_overrides: PunctuationOverrides | None = None
    transcript_filtering_config: TranscriptFilteringConfig | None = None
    audio_filtering_config: AudioFilteringConfig | None = None
    enable_entities: bool = False
    domain: str | None = None

    @property
    def vocabulary(self) -> list[VocabEntry]:
        """additional_vocab with bare strings as entries; entries over 6 words are dropped, as
        Speechmatics does (likewise such `sounds_like` items)."""
        out = []
        for item in self.additional_vocab or ():
            entry = VocabEntry(content=item) if isinstance(item, str) else item
            if not entry.content.strip() or len(entry.content.split()) > 6:
                continue
            sounds = [s for s in entry.sounds_like or () if s.strip() and len(s.split()) <= 6]
            out.append(VocabEntry(content=entry.content.strip(), sounds_like=sounds or None))
        return out

    @property
    def speaker_config(self) -> SpeakerDiarizationConfig:
        return self.speaker_diarization_config or SpeakerDiarizationConfig()


class FetchData(msgspec.Struct):
    url: str
    auth_headers: list[str] | None = None


NotificationContent = Literal["jobinfo", "transcript", "transcript.json-v2", "transcript.txt",
                              "transcript.srt", "data", "text"]


class NotificationConfig(msgspec.Struct):
    url: str
    contents: list[NotificationContent] | None = None
    method: Literal["post", "put"] = "post"
    auth_headers: list[str] | None = None


class TranslationConfig(msgspec.Struct):
    target_languages: Annotated[list[str], msgspec.Meta(min_length=1, max_length=5)]

    @property
    def into_english(self) -> bool:
        """Whisper translates into English only; other targets are reported, not done."""
        return "en" in self.target_languages


class LanguageIdentificationConfig(msgspec.Struct):
    expected_languages: list[str] | None = None
    low_confidence_action: Literal["allow", "reject", "use_default_language"] = "allow"
    default_language: str | None = None


class JobConfig(msgspec.Struct):
    type: str
    transcription_config: TranscriptionConfig | None = None
    fetch_data: FetchData | None = None
    notification_config: Annotated[list[NotificationConfig], msgspec.Meta(max_length=3)] | None = None
    output_config: OutputConfig | None = None
    tracking: dict[str, Any] | None = None
    translation_config: TranslationConfig | None = None
    language_identification_config: LanguageIdentificationConfig | None = None
    # Speech intelligence: accepted, reported as unsupported in the transcript's metadata.
    summarization_config: dict[str, Any] | None = None
    sentiment_analysis_config: dict[str, Any] | None = None
    topic_detection_config: dict[str, Any] | None = None
    auto_chapters_config: dict[str, Any] | None = None
    audio_events_config: dict[str, Any] | None = None


class ProcessingData(msgspec.Struct):
    parallel_engines: PositiveInt | None = None
    requested_parallel: PositiveInt | None = None  # the key an early SDK used
    user_id: str | None = None

    @property
    def engines(self) -> int:
        return self.parallel_engines or self.requested_parallel or 1


class ParsedConfig(msgspec.Struct):
    echo: dict[str, Any]  # what the client sent, cut to what the official client reads back
    config: JobConfig
    transcription: TranscriptionConfig
    model: str  # "standard" | "enhanced"


MODELS = ("standard", "enhanced")


def _invalid(where: str, exc: msgspec.ValidationError) -> Exception:
    return InvalidRequest(f"{where} is invalid: {exc}", kind="Job rejected")


# The deepest JSON a config or header may nest. A real config nests 5 levels; the limit keeps
# every later recursive walk (echo, store, encoding at any stack depth) far from Python's.
MAX_JSON_DEPTH = 64


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (iteratively: the input may be hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def _decode_json(text: str, what: str, kind: str = "Bad Request", max_depth: int | None = MAX_JSON_DEPTH) -> Any:
    """JSON text as Python objects, or a 400 saying why not: malformed, out of range, or nested
    too deeply (past the decoder's own limit msgspec raises RecursionError)."""
    too_deep = InvalidRequest(f"{what} nests lists and objects more than {MAX_JSON_DEPTH} levels deep", kind=kind)
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}", kind=kind) from None
    except RecursionError:
        raise too_deep from None
    if max_depth is not None and _depth(value) > max_depth:
        raise too_deep
    return value


def parse_config(text: str, max_depth: int | None = MAX_JSON_DEPTH) -> ParsedConfig:
    """A submitted config, checked; `max_depth=None` for one accepted before (a stored job's)."""
    raw = _decode_json(text, "config", kind="Job rejected", max_depth=max_depth)
    if not isinstance(raw, dict):
        raise InvalidRequest("config must be a JSON object", kind="Job rejected")
    try:
        config = msgspec.convert({k: v for k, v in raw.items() if v is not None}, JobConfig)
    except msgspec.ValidationError as exc:
        raise _invalid("config", exc) from None
    if config.type != "transcription":
        raise InvalidRequest(
            f"unsupported job type {config.type!r}: this worker runs 'transcription' jobs",
            kind="Job is not of type transcription",
        )
    tc = config.transcription_config
    if tc is None:
        raise InvalidRequest("config.transcription_config is required", kind="No language selected")
    model = tc.model or tc.operating_point or "standard"
    if model not in MODELS:
        raise InvalidRequest(
            f"transcription_config.model {model!r} is not available: use 'standard' or 'enhanced'",
            kind="Requested product not available",
        )
    if tc.language != "auto" and not languages.is_known(tc.language):
        raise InvalidRequest(
            f"transcription_config.language {tc.language!r} is not supported "
            "(use a Whisper language code or 'auto')",
            kind="Requested product not available",
        )
    _check_speakers(tc)
    _check_options(config, tc)
    return ParsedConfig(echo=client_safe(raw), config=config, transcription=tc, model=model)


def _check_speakers(tc: TranscriptionConfig) -> None:
    sdc = tc.speaker_config
    if not (sdc.get_speakers or sdc.speakers):
        return
    where = "transcription_config.speaker_diarization_config"
    if tc.diarization != "speaker":
        raise InvalidRequest(f"{where}.get_speakers/speakers need \"diarization\": \"speaker\"")
    identifiers = 0
    for known in sdc.speakers or ():
        if re.fullmatch(r"S\d+|UU", known.label) or known.label != known.label.strip():
            raise InvalidRequest(f"{where}.speakers: label {known.label!r} is reserved (S1, S2, …, UU) "
                              "or has leading or trailing spaces")
        if len(set(known.speaker_identifiers)) != len(known.speaker_identifiers):
            raise InvalidRequest(f"{where}.speakers: the identifiers of {known.label!r} repeat")
        identifiers += len(known.speaker_identifiers)
    if identifiers > MAX_IDENTIFIERS:
        raise InvalidRequest(f"{where}.speakers: {identifiers} identifiers, at most {MAX_IDENTIFIERS} are allowed")


def _check_language(where: str, code: str) -> None:
    if not languages.is_known(code):
        raise InvalidRequest(f"{where}: {code!r} is not a language this worker knows (use a Whisper language code)")


def _check_options(config: JobConfig, tc: TranscriptionConfig) -> None:
    """What can be refused before any audio is heard: bad regexes, marks, language codes."""
    filtering = tc.transcript_filtering_config
    for n, replacement in enumerate(filtering.replacements or () if filtering else ()):
        try:
            rewrites.compile_replacement(replacement.from_, replacement.to)
        except ValueError as exc:
            raise InvalidRequest(f"transcription_config.transcript_filtering_config.replacements[{n}]: {exc}",
                              kind="Job rejected") from None
    overrides = tc.punctuation_overrides
    for mark in overrides.permitted_marks or () if overrides else ():
        if mark != "all" and len(mark) != 1:
            raise InvalidRequest("transcription_config.punctuation_overrides.permitted_marks: "
                              f"{mark!r} is neither one character nor \"all\"")
    lid = config.language_identification_config
    if lid is not None:
        for code in lid.expected_languages or ():
            _check_language("language_identification_config.expected_languages", code)
        if lid.default_language is not None:
            _check_language("language_identification_config.default_language", lid.default_language)
        if lid.low_confidence_action == "use_default_language" and lid.default_language is None:
            raise InvalidRequest("language_identification_config: low_confidence_action "
                              "\"use_default_language\" needs a default_language")
    if config.translation_config is not None:
        for code in config.translation_config.target_languages:
            if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z]+)?", code):
                raise InvalidRequest(f"translation_config.target_languages: {code!r} is not a language code")


def parse_processing_data(header: str | None) -> ProcessingData:
    if header is None or not header.strip():
        return ProcessingData()
    raw = _decode_json(header, "X-SM-Processing-Data")
    if not isinstance(raw, dict):
        raise InvalidRequest("X-SM-Processing-Data must be a JSON object")
    try:
        return msgspec.convert(raw, ProcessingData)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(
            f"X-SM-Processing-Data is invalid: {exc} (parallel_engines must be an integer >= 1)"
        ) from None
