"""Cluster mode's files: every job's upload, config, outputs and log in one object store that all
workers share, with a local scratch folder for what engines read and write by path.

`ObjectBackend` is the store: `S3Backend` (any S3 API: AWS, SeaweedFS, MinIO, ... through obstore,
chosen by measurement in bench/s3_clients.py) or `FolderBackend` (a folder every worker mounts).
`ObjectBlobs` is the BlobStore protocol (gateway/jobs/blobs.py) over a backend. Keys, under the
backend's prefix (docs/cluster-design.md):

    jobs/{id}/upload                      the upload, streamed up by the accepting worker
    jobs/{id}/config.json
    jobs/{id}/a{attempt}/transcript.json  (.txt, .srt, diarization.rttm): one set per attempt
    jobs/{id}/log/a{attempt}              the log is these, concatenated in attempt order

Outputs and logs are per attempt: a worker taking a job over runs attempt n + 1, and a late
writer of attempt n (a worker thought dead) cannot replace what attempt n + 1 wrote, because
readers read the attempt the job's row names. The attempt is an explicit `attempt=` keyword
(default 1, embedded mode's only attempt).

Logs never wait for the network: `append_log` runs on the event loop, so it appends to a local
file, and a flusher thread sends the new lines at most every `flush_interval` seconds; `flush(job_id)`
does it now. S3 has no append: a flush reads the attempt's object and writes it back with the new
lines after it, so a worker that continues an attempt begun elsewhere (the accepting worker wrote
its first lines) keeps those, provided that worker flushed before handing the job over. Two
workers flushing the same attempt at the same moment could lose one's lines; the hand-over
order (flush, then hand over) keeps that from happening.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import obstore
from obstore.store import S3Store

from gateway.jobs.blobs import OUTPUT_FILES

log = logging.getLogger("chorus.cluster.objects")

PART_SIZE = 8 * 1024 * 1024  # multipart above this, in parts of this (bench/s3_clients.py)
PART_CONCURRENCY = 4


class ObjectBackend(Protocol):
    """Keys are "/"-separated names under the backend's own root. Every method blocks."""

    def put_file(self, key: str, path: Path) -> None:
        """Stream a local file up (multipart when large), never held whole in memory."""

    def get_file(self, key: str, path: Path) -> None:
        """Stream the object down to `path` (replaced whole, never seen half-written).
        FileNotFoundError if there is no such object."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes:
        """FileNotFoundError if there is no such object."""

    def delete(self, key: str) -> None:
        """Nothing if there is no such object."""

    def list(self, prefix: str) -> list[str]:
        """The keys starting with `prefix` (a plain string prefix, as in S3), sorted."""

    def delete_prefix(self, prefix: str) -> None:
        """Every object whose key starts with `prefix`."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


def _temp_beside(path: Path) -> Path:
    """A hidden temporary name in the same folder, for write-then-rename."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` to write; renamed over `path` if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- backends ---------------------------------------------------------------------------


class FolderBackend:
    """Objects as files under a folder every worker mounts (file:///path): written to a hidden
    temporary file and renamed, so a reader on any worker sees the old file or the new one."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_url(cls, url: str) -> FolderBackend:
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or not parsed.path:
            raise ValueError(f"not a file:///path URL: {url!r}")
        return cls(Path(unquote(parsed.path)))

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, path: Path) -> None:
        self._write(key, lambda tmp: shutil.copyfile(path, tmp))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda tmp: tmp.write_bytes(data))

    def _write(self, key: str, write) -> None:
        target = self._path(key)
        for retry in (False, True):
            try:
                with _replacing(target) as tmp:
                    write(tmp)
                return
            except FileNotFoundError:  # a delete_prefix elsewhere removed the emptied folder meanwhile
                if retry:
                    raise

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        with _replacing(Path(path)) as tmp:
            shutil.copyfile(source, tmp)

    def get_bytes(self, key: str) -> bytes:
        source = self._path(key)
        if source.is_dir():
            raise FileNotFoundError(source)
        return source.read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        if any(p in (".", "..") for p in prefix.split("/")):
            raise ValueError(f"invalid key prefix {prefix!r}")
        folder = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            relative = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith("."):
                    key = name if relative == "." else f"{relative}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> None:
        folders = set()
        for key in self.list(prefix):
            path = self.root / key
            path.unlink(missing_ok=True)
            folders.update(p for p in path.parents if p != self.root and self.root in p.parents)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only if empty: another writer may be filling it
            except OSError:
                pass


class S3Backend:
    """Objects in an S3 bucket under a prefix, through obstore (Rust's object_store; chosen by
    measurement, bench/s3_clients.py): blocking calls that release the GIL, safe from any thread.
    Large files go up in PART_SIZE parts, PART_CONCURRENCY at a time, and come down as a stream,
    so memory stays bounded whatever the size.

    Credentials and endpoint are explicit (gateway/cli.py reads AWS_ENDPOINT_URL,
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION); one left None is looked for as
    object_store does (AWS_* variables, an instance profile, a web identity on Kubernetes). With an
    endpoint URL (SeaweedFS, MinIO, ...) buckets are addressed by path, as those servers expect."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None, region: str | None = None) -> None:
        if not bucket:
            raise ValueError("S3Backend: no bucket")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        config: dict = {"region": region, "access_key_id": access_key, "secret_access_key": secret_key,
                        "endpoint": endpoint_url}
        if endpoint_url:
            config["virtual_hosted_style_request"] = False
        self.store = S3Store(
            bucket, prefix=self.prefix or None, config={k: v for k, v in config.items() if v is not None},
            client_options={"allow_http": bool(endpoint_url and endpoint_url.startswith("http://")),
                            "connect_timeout": "10s",
                            "read_timeout": "60s",  # a stalled transfer fails (and is retried)...
                            "timeout": "1h"},  # ...a slow one may take its time: a 2 GB stream
            retry_config={"max_retries": 5, "retry_timeout": timedelta(minutes=2)})

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, region: str | None = None) -> S3Backend:
        """s3://bucket/prefix (the prefix may be empty)."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(parsed.netloc, unquote(parsed.path), endpoint_url=endpoint_url, access_key=access_key,
                   secret_key=secret_key, region=region)

    def put_file(self, key: str, path: Path) -> None:
        obstore.put(self.store, _check_key(key), Path(path), chunk_size=PART_SIZE, max_concurrency=PART_CONCURRENCY)

    def get_file(self, key: str, path: Path) -> None:
        result = obstore.get(self.store, _check_key(key))  # FileNotFoundError if missing
        with _replacing(Path(path)) as tmp, open(tmp, "wb") as f:
            for chunk in result.stream(min_chunk_size=PART_SIZE):
                f.write(chunk)

    def put_bytes(self, key: str, data: bytes) -> None:
        obstore.put(self.store, _check_key(key), data)

    def get_bytes(self, key: str) -> bytes:
        return bytes(obstore.get(self.store, _check_key(key)).bytes())

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self.store, _check_key(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        """object_store lists whole path segments: list the folder, keep what starts with prefix."""
        folder = prefix.rpartition("/")[0] or None
        keys = [meta["path"] for batch in obstore.list(self.store, prefix=folder, chunk_size=1000)
                for meta in batch]
        return sorted(k for k in keys if k.startswith(prefix))

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list(prefix)
        if keys:
            try:
                obstore.delete(self.store, keys)  # DeleteObjects, 1000 keys a request
            except FileNotFoundError:  # one went meanwhile
                pass


def backend_from_url(url: str, *, endpoint_url: str | None = None, access_key: str | None = None,
                     secret_key: str | None = None, region: str | None = None) -> ObjectBackend:
    """s3://bucket/prefix or file:///path."""
    scheme = urlparse(url).scheme
    if scheme == "s3":
        return S3Backend.from_url(url, endpoint_url=endpoint_url, access_key=access_key, secret_key=secret_key,
                                  region=region)
    if scheme == "file":
        return FolderBackend.from_url(url)
    raise ValueError(f"unsupported object store URL {url!r}: use s3://bucket/prefix or file:///path")


# ---- the BlobStore over a backend -------------------------------------------------------

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class _AttemptLog:
    """This worker's lines of one attempt's log: a local file, of which the first `sent` bytes
    are in the stored object."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent = 0
        self.dirty = False


class ObjectBlobs:
    """The BlobStore protocol over an ObjectBackend, with a local scratch folder:

        scratch/jobs/{id}/      upload, audio.f32* (engines read and write them by path), log.a{n}
        scratch/outputs/{id}/a{n}/  cached copies of outputs, to serve with ranges; a copy unused
                                    for `cache_seconds` is deleted

    Beyond the protocol, for the cluster worker: `publish_upload`, `fetch_upload`, `read_config`,
    `flush`, `drop_local` and `close`. Thread-safe; `append_log` never touches the network."""

    def __init__(self, backend: ObjectBackend, scratch: Path, *, flush_interval: float = 0.5,
                 cache_seconds: float = 3600) -> None:
        self.backend = backend
        self.scratch = Path(scratch)
        self.flush_interval = flush_interval
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()  # the tables below
        self._logs: dict[tuple[str, int], _AttemptLog] = {}
        self._job_locks: dict[str, threading.Lock] = {}  # one upload of a job's logs at a time; removal
        self._wake = threading.Event()  # lines to send
        self._closed = threading.Event()
        self._closing = False
        self._flusher: threading.Thread | None = None
        self._pruned = 0.0

    # ---- keys and local paths ----

    @staticmethod
    def _job(job_id: str) -> str:
        if not _JOB_ID.fullmatch(job_id) or ".." in job_id:
            raise ValueError(f"invalid job id {job_id!r}")
        return job_id

    @staticmethod
    def _attempt(attempt: int) -> int:
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"invalid attempt {attempt!r}")
        return attempt

    def _prefix(self, job_id: str) -> str:
        return f"jobs/{self._job(job_id)}/"

    def _output_key(self, job_id: str, fmt: str, attempt: int) -> str:
        return f"{self._prefix(job_id)}a{self._attempt(attempt)}/{OUTPUT_FILES[fmt]}"

    def _log_key(self, job_id: str, attempt: int) -> str:
        return f"{self._prefix(job_id)}log/a{attempt}"

    def _local(self, job_id: str) -> Path:
        return self.scratch / "jobs" / self._job(job_id)

    def _cached(self, job_id: str, fmt: str, attempt: int) -> Path:
        return self.scratch / "outputs" / self._job(job_id) / f"a{self._attempt(attempt)}" / OUTPUT_FILES[fmt]

    # ---- the BlobStore protocol ----

    def upload_path(self, job_id: str) -> Path:
        return self._local(job_id) / "upload"

    def audio_path(self, job_id: str) -> Path:
        return self._local(job_id) / "audio.f32"

    def create(self, job_id: str) -> None:
        self._local(job_id).mkdir(parents=True, exist_ok=True)

    def write_config(self, job_id: str, text: str) -> None:
        self.backend.put_bytes(self._prefix(job_id) + "config.json", text.encode("utf-8"))

    def write_outputs(self, job_id: str, files: dict[str, bytes | str], *, attempt: int = 1) -> None:
        """Each output under the attempt's own keys (a PUT replaces an object whole); a local copy
        kept for serving."""
        for fmt, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            self.backend.put_bytes(self._output_key(job_id, fmt, attempt), data)
            with _replacing(self._cached(job_id, fmt, attempt)) as tmp:
                tmp.write_bytes(data)

    def read_output(self, job_id: str, fmt: str, *, attempt: int = 1) -> bytes:
        return self.output_file(job_id, fmt, attempt=attempt).read_bytes()

    def output_file(self, job_id: str, fmt: str, *, attempt: int = 1) -> Path:
        """The local copy, downloaded on first use. An attempt's outputs are written once, by the
        worker running it (a rerun writes the next attempt's keys), so a copy never goes stale."""
        if fmt not in OUTPUT_FILES:
            raise FileNotFoundError(f"no output format {fmt!r}")
        self._prune_cache()
        path = self._cached(job_id, fmt, attempt)
        try:
            os.utime(path)  # used now: kept another cache_seconds
        except FileNotFoundError:
            self.backend.get_file(self._output_key(job_id, fmt, attempt), path)
        return path

    def append_log(self, job_id: str, line: str, *, attempt: int = 1) -> None:
        """On the event loop: a local append, then the flusher is woken. FileNotFoundError if this
        worker holds no folder of the job (removed, or dropped locally)."""
        folder = self._local(job_id)
        key = (job_id, self._attempt(attempt))
        with open(folder / f"log.a{attempt}", "a", encoding="utf-8") as f:  # FileNotFoundError: no folder
            f.write(line)
        with self._lock:
            entry = self._logs.get(key)
            if entry is None:
                entry = self._logs[key] = _AttemptLog(folder / f"log.a{attempt}")
            entry.dirty = True
            self._start_flusher()
        self._wake.set()

    def read_log(self, job_id: str) -> bytes:
        """Every attempt's log in attempt order: the stored object, and after it the lines this
        worker has not sent yet."""
        prefix = f"{self._prefix(job_id)}log/a"
        stored = {int(k[len(prefix):]) for k in self.backend.list(prefix) if k[len(prefix):].isdigit()}
        with self._lock:
            local = {attempt for (job, attempt) in self._logs if job == job_id}
        if not stored and not local:
            raise FileNotFoundError(f"job {job_id} has no log")
        parts = []
        for attempt in sorted(stored | local):
            if attempt in local:
                with self._job_lock(job_id):  # not between a flush's upload and its bookkeeping
                    parts += [self._stored_log(job_id, attempt), self._unsent(job_id, attempt)[0]]
            else:
                parts.append(self._stored_log(job_id, attempt))
        return b"".join(parts)

    def drop_audio(self, job_id: str) -> None:
        """The local upload and decoded samples (and split channels), and the stored upload."""
        self.upload_path(job_id).unlink(missing_ok=True)
        audio = self.audio_path(job_id)
        for path in audio.parent.glob(f"{audio.name}*"):
            path.unlink(missing_ok=True)
        self.backend.delete(self._prefix(job_id) + "upload")

    def remove(self, job_id: str) -> None:
        """Everything of the job, here and in the store; its unsent log lines are dropped."""
        with self._job_lock(job_id):
            self._forget(job_id)
            self.backend.delete_prefix(self._prefix(job_id))

    # ---- beyond the protocol: the cluster worker's ----

    def publish_upload(self, job_id: str) -> None:
        """Stream the received upload to the store (multipart), for whichever worker runs the job."""
        self.backend.put_file(self._prefix(job_id) + "upload", self.upload_path(job_id))

    def fetch_upload(self, job_id: str) -> Path:
        """The upload as a local file, streamed down unless this worker has it already (it accepted
        the job). FileNotFoundError if the store has none (a fetch_data job: fetch it again)."""
        path = self.upload_path(job_id)
        self.create(job_id)
        if not path.exists():
            self.backend.get_file(self._prefix(job_id) + "upload", path)
        return path

    def read_config(self, job_id: str) -> str:
        return self.backend.get_bytes(self._prefix(job_id) + "config.json").decode("utf-8")

    def flush(self, job_id: str) -> None:
        """Upload the job's log lines not yet sent, now (blocking): at a job's end, and before
        handing a job to another worker."""
        with self._lock:
            attempts = sorted(a for (job, a), entry in self._logs.items() if job == job_id and entry.dirty)
        for attempt in attempts:
            self._upload_log(job_id, attempt)

    def drop_local(self, job_id: str) -> None:
        """This worker is done with the job (handed over, or ended and its callbacks sent): flush
        its log, delete its local files; the stored objects stay, and so do cached outputs (a
        transcript request woken by the job's end may be serving one; they age out)."""
        self.flush(job_id)
        with self._job_lock(job_id):
            self._forget(job_id, outputs=False)

    def close(self) -> None:
        """Stop the flusher after a last flush of every log."""
        with self._lock:
            self._closing = True
            flusher = self._flusher
        self._closed.set()
        self._wake.set()
        if flusher is not None:
            flusher.join()
        with self._lock:
            dirty = {job for (job, _), entry in self._logs.items() if entry.dirty}
        for job_id in dirty:
            try:
                self.flush(job_id)
            except Exception:
                log.exception("job %s: log lines could not be stored at close", job_id)

    # ---- logs: the flusher ----

    def _job_lock(self, job_id: str) -> threading.Lock:
        with self._lock:
            return self._job_locks.setdefault(job_id, threading.Lock())

    def _forget(self, job_id: str, outputs: bool = True) -> None:
        """Local state and files of the job (its job lock held); its cached outputs too if `outputs`."""
        with self._lock:
            for key in [k for k in self._logs if k[0] == job_id]:
                del self._logs[key]
            # A thread still waiting on this lock finds no log state when it gets it, and stops.
            self._job_locks.pop(job_id, None)
        shutil.rmtree(self._local(job_id), ignore_errors=True)
        if outputs:
            shutil.rmtree(self.scratch / "outputs" / self._job(job_id), ignore_errors=True)

    def _start_flusher(self) -> None:  # self._lock held
        if self._flusher is None and not self._closing:
            self._flusher = threading.Thread(target=self._flush_loop, name="chorus-log-flusher", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        backoff = self.flush_interval
        while True:
            with self._lock:
                if self._closing:  # checked before each wait: close's wake-up may have been cleared below
                    return
            self._wake.wait()
            self._closed.wait(self.flush_interval)  # debounce: the lines of the next moments go up together
            self._wake.clear()
            with self._lock:
                dirty = sorted(k for k, entry in self._logs.items() if entry.dirty)
            failed = False
            for job_id, attempt in dirty:
                try:
                    self._upload_log(job_id, attempt)
                except Exception as exc:  # the store is down: keep the lines, try again later
                    failed = True
                    log.warning("job %s: log not stored yet (%s); retrying", job_id, exc)
            if failed:
                self._wake.set()
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            else:
                backoff = self.flush_interval

    def _upload_log(self, job_id: str, attempt: int) -> None:
        """The stored object, with this worker's unsent lines appended (S3 has no append: read,
        then write whole). Read afresh each time, so lines another worker added to the attempt
        meanwhile (the accepting worker's, before the running one's) are kept."""
        with self._job_lock(job_id):
            with self._lock:
                entry = self._logs.get((job_id, attempt))
                if entry is None:  # removed or dropped meanwhile
                    return
                entry.dirty = False  # lines appended from here on make it dirty again
            if not entry.path.exists():  # the job's folder went (removed) after the line was written
                with self._lock:
                    self._logs.pop((job_id, attempt), None)
                return
            try:
                tail, end = self._unsent(job_id, attempt, entry)
                if tail:
                    self.backend.put_bytes(self._log_key(job_id, attempt), self._stored_log(job_id, attempt) + tail)
                    entry.sent = end
            except BaseException:
                with self._lock:
                    entry.dirty = True
                raise

    def _stored_log(self, job_id: str, attempt: int) -> bytes:
        try:
            return self.backend.get_bytes(self._log_key(job_id, attempt))
        except FileNotFoundError:
            return b""

    def _unsent(self, job_id: str, attempt: int, entry: _AttemptLog | None = None) -> tuple[bytes, int]:
        """This worker's whole lines of the attempt not in the store yet, and the offset they end at."""
        if entry is None:
            with self._lock:
                entry = self._logs.get((job_id, attempt))
        if entry is None:
            return b"", 0
        try:
            data = entry.path.read_bytes()
        except FileNotFoundError:
            return b"", entry.sent
        end = max(entry.sent, data.rfind(b"\n") + 1)  # a line being written is sent when complete
        return data[entry.sent:end], end

    # ---- the output cache ----

    def _prune_cache(self) -> None:
        """At most once a minute: delete cached outputs unused for cache_seconds."""
        now = time.time()
        with self._lock:
            if now - self._pruned < 60:
                return
            self._pruned = now
        root = self.scratch / "outputs"
        for path in root.glob("*/a*/*"):
            try:
                if now - path.stat().st_mtime > self.cache_seconds:
                    path.unlink()
            except FileNotFoundError:
                pass
        for folder in sorted(root.glob("*/a*"), reverse=True) + sorted(root.glob("*")):
            try:
                folder.rmdir()
            except OSError:
                pass
