"""What can go wrong for a request or a job, in the domain's own words.

Raised by every layer; none of them knows HTTP. gateway/http/errors.py maps each class to its
status code and the reference's error text in one table, as Starlette's exception handlers
do. `detail` is what the client reads: what is wrong, never a path on this machine.

May import: nothing of Chorus.
"""

from __future__ import annotations


class ChorusError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(ChorusError):
    """The request is malformed or its config is invalid. `kind` is the reference's error text
    for it ("Job rejected", "Malformed request", "No language selected", …)."""

    def __init__(self, detail: str, kind: str = "Bad Request") -> None:
        super().__init__(detail)
        self.kind = kind


class InvalidQuery(ChorusError):
    """A query parameter is out of range or of the wrong type."""


class UploadTooLarge(ChorusError):
    """The upload is past --max-upload-mb."""


class FeatureUnavailable(ChorusError):
    """The job asks for something this worker is not set up to do."""


class Busy(ChorusError):
    """Not enough engines free for the job, and no room to queue it (the reference's text)."""

    def __init__(self, requested: int, in_use: int, total: int) -> None:
        super().__init__(f"Server busy: {requested} engines not available "
                         f"({in_use} engines in use, {total} parallel allowed)")


class ShuttingDown(ChorusError):
    """The worker drains and takes no new jobs."""


class JobNotFound(ChorusError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")


class JobExpired(ChorusError):
    """Forgotten with its files, beyond the job history bound."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} has expired from the job history")


class JobDeleted(ChorusError):
    """Its files were removed with it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was deleted")


class JobLocked(ChorusError):
    """Still running, and the DELETE did not force it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is still running; pass force=true to stop and delete it")


class TranscriptNotReady(ChorusError):
    pass


class JobRejected(ChorusError):
    """Asked for the transcript of a job that failed."""


class FormatNotSupported(ChorusError):
    pass


class LogNotAvailable(ChorusError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Log for job ID {job_id} not found")
