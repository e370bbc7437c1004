"""A job's folder under --all-formats: config, upload, decoded audio, transcripts and log.

File names are fixed; an uploaded filename never becomes a path. Writing transcripts is
blocking I/O and runs in a worker thread (see runner.py).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

FORMATS = {"json": "transcript.json", "txt": "transcript.txt", "srt": "transcript.srt",
           "rttm": "diarization.rttm"}


class JobFolder:
    def __init__(self, root: Path, job_id: str) -> None:
        self.path = root / job_id
        self.config = self.path / "config.json"
        self.upload = self.path / "upload"
        self.audio = self.path / "audio.f32"
        self.log = self.path / "job.log"

    def transcript(self, fmt: str) -> Path:
        return self.path / FORMATS[fmt]

    def write_config(self, config_text: str) -> None:
        self.config.write_text(config_text, encoding="utf-8")

    def write_transcripts(self, rendered: dict[str, bytes | str]) -> None:
        for fmt, content in rendered.items():
            tmp = self.transcript(fmt).with_suffix(".tmp")
            if isinstance(content, str):
                tmp.write_text(content, encoding="utf-8")
            else:
                tmp.write_bytes(content)
            tmp.replace(self.transcript(fmt))  # readers never see half a file

    def drop_audio(self) -> None:
        """The upload and decoded samples are only needed while the job runs."""
        self.upload.unlink(missing_ok=True)
        for path in self.path.glob(f"{self.audio.name}*"):  # the mix and any split channels
            path.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class JobLog:
    """Timestamped lines in the job's log file; appends are small and unbuffered."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str, level: str = "INFO") -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {level:<7} {message}\n")
