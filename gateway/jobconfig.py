"""The submitted job config and X-SM-Processing-Data header, parsed into typed structs.

The config is echoed back exactly as sent (minus top-level nulls, which break the official
client); processing reads only the typed view. Unknown keys are accepted and ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from gateway.echo import client_safe
from gateway.errors import bad_request
from shared import languages

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
    get_speakers: bool = False
    speakers: list[KnownSpeaker] | None = None

    @property
    def sensitivity(self) -> float:
        value = self.speaker_sensitivity if self.speaker_sensitivity is not None else self.speakers_sensitivity
        return 0.5 if value is None else value


class TranscriptionConfig(msgspec.Struct):
    language: str
    model: str | None = None
    operating_point: str | None = None
    diarization: Literal["none", "speaker", "channel"] = "none"
    speaker_diarization_config: SpeakerDiarizationConfig | None = None
    channel_diarization_labels: list[ChannelLabel] | None = None

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


class JobConfig(msgspec.Struct):
    type: str
    transcription_config: TranscriptionConfig | None = None
    fetch_data: FetchData | None = None
    notification_config: Annotated[list[NotificationConfig], msgspec.Meta(max_length=3)] | None = None
    output_config: OutputConfig | None = None
    tracking: dict[str, Any] | None = None


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
    return bad_request(f"{where} is invalid: {exc}", error="Job rejected")


def parse_config(text: str) -> ParsedConfig:
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise bad_request(f"config is not valid JSON: {exc}", error="Job rejected") from None
    if not isinstance(raw, dict):
        raise bad_request("config must be a JSON object", error="Job rejected")
    try:
        config = msgspec.convert({k: v for k, v in raw.items() if v is not None}, JobConfig)
    except msgspec.ValidationError as exc:
        raise _invalid("config", exc) from None
    if config.type != "transcription":
        raise bad_request(
            f"unsupported job type {config.type!r}: this worker runs 'transcription' jobs",
            error="Job is not of type transcription",
        )
    tc = config.transcription_config
    if tc is None:
        raise bad_request("config.transcription_config is required", error="No language selected")
    model = tc.model or tc.operating_point or "standard"
    if model not in MODELS:
        raise bad_request(
            f"transcription_config.model {model!r} is not available: use 'standard' or 'enhanced'",
            error="Requested product not available",
        )
    if tc.language != "auto" and not languages.is_known(tc.language):
        raise bad_request(
            f"transcription_config.language {tc.language!r} is not supported "
            "(use a Whisper language code or 'auto')",
            error="Requested product not available",
        )
    _check_speakers(tc)
    return ParsedConfig(echo=client_safe(raw), config=config, transcription=tc, model=model)


def _check_speakers(tc: TranscriptionConfig) -> None:
    sdc = tc.speaker_config
    if not (sdc.get_speakers or sdc.speakers):
        return
    where = "transcription_config.speaker_diarization_config"
    if tc.diarization != "speaker":
        raise bad_request(f"{where}.get_speakers/speakers need \"diarization\": \"speaker\"")
    identifiers = 0
    for known in sdc.speakers or ():
        if re.fullmatch(r"S\d+|UU", known.label) or known.label != known.label.strip():
            raise bad_request(f"{where}.speakers: label {known.label!r} is reserved (S1, S2, …, UU) "
                              "or has leading or trailing spaces")
        if len(set(known.speaker_identifiers)) != len(known.speaker_identifiers):
            raise bad_request(f"{where}.speakers: the identifiers of {known.label!r} repeat")
        identifiers += len(known.speaker_identifiers)
    if identifiers > MAX_IDENTIFIERS:
        raise bad_request(f"{where}.speakers: {identifiers} identifiers, at most {MAX_IDENTIFIERS} are allowed")


def parse_processing_data(header: str | None) -> ProcessingData:
    if header is None or not header.strip():
        return ProcessingData()
    try:
        raw = msgspec.json.decode(header)
    except msgspec.DecodeError as exc:
        raise bad_request(f"X-SM-Processing-Data is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise bad_request("X-SM-Processing-Data must be a JSON object")
    try:
        return msgspec.convert(raw, ProcessingData)
    except msgspec.ValidationError as exc:
        raise bad_request(
            f"X-SM-Processing-Data is invalid: {exc} (parallel_engines must be an integer >= 1)"
        ) from None
