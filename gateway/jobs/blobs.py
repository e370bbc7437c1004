"""Where a job's files live: the upload, the decoded audio, the config, the outputs and the log.

`BlobStore` is the seam cluster mode needs (an object store there); `JobFolders` is today's
implementation, a folder per job under --all-formats. Engines read the upload and write and
read the decoded audio by path, so those two stay local files in any implementation. Every
method is blocking I/O: the worker calls them in a thread. File names are fixed; an uploaded
filename never becomes a path. Outputs and logs are kept per `attempt` (a job taken over by
another worker in cluster mode runs its next attempt); a single worker has only attempt 1.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from gateway.transcript.render import FORMATS

OUTPUT_FILES = {"json": "transcript.json", "txt": "transcript.txt", "srt": "transcript.srt",
                "rttm": "diarization.rttm"}
assert set(FORMATS) <= set(OUTPUT_FILES)


class BlobStore(Protocol):
    def upload_path(self, job_id: str) -> Path:
        """Where the upload is received (and fetched), for the engine to decode."""

    def audio_path(self, job_id: str) -> Path:
        """Where the engine writes the decoded samples (and split channels beside them)."""

    def create(self, job_id: str) -> None: ...

    def write_config(self, job_id: str, text: str) -> None: ...

    def write_outputs(self, job_id: str, files: dict[str, bytes | str], *, attempt: int = 1) -> None:
        """Outputs by format ("json", "txt", "srt", "rttm"); readers never see half a file."""

    def read_output(self, job_id: str, fmt: str, *, attempt: int = 1) -> bytes:
        """FileNotFoundError if the job has no such output."""

    def output_file(self, job_id: str, fmt: str, *, attempt: int = 1) -> Path:
        """A local file of the output, to serve (with ranges); a remote store keeps a local copy.
        FileNotFoundError if the job has no such output."""

    def append_log(self, job_id: str, line: str, *, attempt: int = 1) -> None:
        """Called on the event loop: it must not wait on the network."""

    def read_log(self, job_id: str) -> bytes:
        """FileNotFoundError if the job has no log."""

    def drop_audio(self, job_id: str) -> None:
        """The upload and the decoded samples: only needed while the job runs."""

    def remove(self, job_id: str) -> None:
        """Everything of the job; nothing if there is nothing."""


class JobFolders:
    """A folder per job: config.json, upload, audio.f32*, transcript.*, diarization.rttm, job.log."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, job_id: str) -> Path:
        return self.root / job_id

    def upload_path(self, job_id: str) -> Path:
        return self._folder(job_id) / "upload"

    def audio_path(self, job_id: str) -> Path:
        return self._folder(job_id) / "audio.f32"

    def create(self, job_id: str) -> None:
        self._folder(job_id).mkdir(parents=True)

    def write_config(self, job_id: str, text: str) -> None:
        (self._folder(job_id) / "config.json").write_text(text, encoding="utf-8")

    def write_outputs(self, job_id: str, files: dict[str, bytes | str], *, attempt: int = 1) -> None:
        for fmt, content in files.items():
            path = self._folder(job_id) / OUTPUT_FILES[fmt]
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
            tmp.replace(path)

    def read_output(self, job_id: str, fmt: str, *, attempt: int = 1) -> bytes:
        return self.output_file(job_id, fmt).read_bytes()

    def output_file(self, job_id: str, fmt: str, *, attempt: int = 1) -> Path:
        path = self._folder(job_id) / OUTPUT_FILES[fmt]
        if not path.is_file():
            raise FileNotFoundError(path)
        return path

    def append_log(self, job_id: str, line: str, *, attempt: int = 1) -> None:
        with open(self._folder(job_id) / "job.log", "a", encoding="utf-8") as f:
            f.write(line)

    def read_log(self, job_id: str) -> bytes:
        return (self._folder(job_id) / "job.log").read_bytes()

    def drop_audio(self, job_id: str) -> None:
        self.upload_path(job_id).unlink(missing_ok=True)
        audio = self.audio_path(job_id)
        for path in audio.parent.glob(f"{audio.name}*"):  # the mix and any split channels
            path.unlink(missing_ok=True)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self._folder(job_id), ignore_errors=True)


class JobLog:
    """A job's log: timestamped lines, appended unbuffered (small, and read while the job runs)."""

    def __init__(self, blobs: BlobStore, job_id: str, attempt: int = 1) -> None:
        self.blobs = blobs
        self.job_id = job_id
        self.attempt = attempt

    def __call__(self, message: str, level: str = "INFO") -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        try:
            self.blobs.append_log(self.job_id, f"{stamp} {level:<7} {message}\n", attempt=self.attempt)
        except FileNotFoundError:  # the job was deleted and its files removed meanwhile
            pass
