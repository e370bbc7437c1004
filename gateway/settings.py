"""The worker's settings: typed, frozen, built once by gateway/cli.py from the flags and the
environment (the only module that reads either), and handed down (gunicorn's `cfg`, in spirit).

May import: shared (the engines' own settings); nothing else of Chorus.
"""

from __future__ import annotations

from importlib import metadata

import msgspec

from shared.messages import EngineSettings

VERSION = metadata.version("chorus")
MAX_WAIT_S = 300  # the longest `?wait=` long-poll, as the reference allows
DEFAULT_MAX_JOB_HISTORY = 1000


class SplitSettings(msgspec.Struct, frozen=True):
    """How a k-engine job is cut (engine/plan.py)."""

    window_seconds: float = 30.0  # how far a cut may move from its ideal point to find a pause
    overlap_seconds: float = 1.5  # margin each side of a cut that falls inside speech


class ClusterSettings(msgspec.Struct, frozen=True):
    """Cluster mode: many workers on one PostgreSQL database and one object store."""

    database_url: str  # postgresql://…
    object_store: str  # s3://bucket/prefix, or file:///path (a volume every worker mounts)
    worker_id: str  # unique and stable per worker (a pod's name): a restart under it reclaims its jobs
    advertise_url: str  # how others reach this worker (shown in GET /jobs `workers`)
    lease_seconds: float = 30.0  # a worker silent this long is dead and its jobs are taken over
    s3_endpoint_url: str | None = None  # AWS_ENDPOINT_URL
    s3_access_key: str | None = None  # AWS_ACCESS_KEY_ID
    s3_secret_key: str | None = None  # AWS_SECRET_ACCESS_KEY
    s3_region: str | None = None  # AWS_REGION


class Settings(msgspec.Struct, frozen=True):
    output_dir: str  # --all-formats: the job table and every job's folder
    engines: list[EngineSettings]
    max_job_history: int = DEFAULT_MAX_JOB_HISTORY  # finished jobs kept; older ones answer 410
    max_audio_seconds: float = 7200.0
    max_upload_bytes: int = 2048 << 20
    split: SplitSettings = SplitSettings()
    queue_size: int = 0  # jobs that may wait for engines instead of a 503
    drain_timeout: float = 600.0  # SIGTERM: how long running jobs get before they are cancelled
    hang_timeout: float = 300.0  # a busy engine silent this long is killed as hung
    api_key: str | None = None  # required as a bearer token on /v2/* when set
    speaker_secrets_dir: str | None = None  # SM_SPEAKER_ID_SECRETS_DIR: keys for speaker identifiers
    cluster: ClusterSettings | None = None  # None: the embedded single worker (SQLite + folders)
