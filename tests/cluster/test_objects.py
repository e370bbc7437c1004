"""Cluster mode's object store (gateway/cluster/objects.py) on real stores: a folder, and S3 on a
SeaweedFS server. Two ObjectBlobs over one backend are two workers."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from gateway.cluster.objects import (
    PART_SIZE,
    FolderBackend,
    ObjectBackend,
    ObjectBlobs,
    S3Backend,
    backend_from_url,
)
from gateway.jobs.blobs import JobLog

MiB = 1 << 20


def make_s3(request) -> S3Backend:
    bucket, prefix = request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_prefix")
    return S3Backend.from_url(bucket.url(prefix), endpoint_url=bucket.endpoint_url, access_key=bucket.access_key,
                              secret_key=bucket.secret_key, region=bucket.region)


@pytest.fixture(params=["folder", "s3"])
def backend(request, tmp_path) -> ObjectBackend:
    return FolderBackend(tmp_path / "store") if request.param == "folder" else make_s3(request)


@pytest.fixture
def workers(backend, tmp_path):
    """Three workers sharing the store, each with its own scratch folder."""
    made = [ObjectBlobs(backend, tmp_path / f"scratch-{name}") for name in "abc"]
    yield made
    for blobs in made:
        blobs.close()


def write_file(path: Path, size: int) -> str:
    """`size` bytes (a random MiB repeated: fast to make, nothing any layer could dedupe within a
    part); returns their sha256."""
    block, digest = os.urandom(MiB), hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "little") + block[8:]
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


class PeakRss:
    """The process's RSS sampled every 5 ms over the block (psutil); `.growth` over the start."""

    def __enter__(self) -> PeakRss:
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def wait_for(condition, timeout: float) -> float:
    """Seconds until condition() held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


# ---- the backends ---------------------------------------------------------------------------


def test_objects_round_trip_and_a_put_replaces_whole(backend, tmp_path):
    backend.put_bytes("jobs/j1/config.json", b'{"a": 1}')
    assert backend.get_bytes("jobs/j1/config.json") == b'{"a": 1}'
    backend.put_bytes("jobs/j1/config.json", b"{}")
    assert backend.get_bytes("jobs/j1/config.json") == b"{}"
    source = tmp_path / "source"
    digest = write_file(source, 2 * PART_SIZE + MiB)  # more than one part
    backend.put_file("jobs/j1/upload", source)
    out = tmp_path / "down" / "upload"
    backend.get_file("jobs/j1/upload", out)
    assert sha256(out) == digest
    backend.put_bytes("jobs/j1/upload", b"small now")
    backend.get_file("jobs/j1/upload", out)
    assert out.read_bytes() == b"small now"


def test_a_missing_object_is_file_not_found_and_leaves_no_file(backend, tmp_path):
    with pytest.raises(FileNotFoundError):
        backend.get_bytes("jobs/none/config.json")
    out = tmp_path / "down" / "upload"
    with pytest.raises(FileNotFoundError):
        backend.get_file("jobs/none/upload", out)
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))  # no temporary file
    backend.delete("jobs/none/upload")  # nothing to delete: fine
    backend.delete_prefix("jobs/none/")


def test_listing_is_by_plain_prefix_sorted_and_deleting_a_prefix_spares_the_rest(backend):
    keys = ["jobs/a/a1/transcript.txt", "jobs/a/config.json", "jobs/a/log/a1", "jobs/a/log/a10", "jobs/a/log/a2",
            "jobs/ab/config.json", "jobs/b/upload"]
    for key in reversed(keys):
        backend.put_bytes(key, key.encode())
    assert backend.list("") == keys
    assert backend.list("jobs/a/") == keys[:5]
    assert backend.list("jobs/a") == keys[:6]  # a string prefix, as in S3: jobs/ab too
    assert backend.list("jobs/a/log/a1") == ["jobs/a/log/a1", "jobs/a/log/a10"]
    assert backend.list("jobs/c/") == []
    backend.delete_prefix("jobs/a/")
    assert backend.list("") == ["jobs/ab/config.json", "jobs/b/upload"]
    backend.delete("jobs/b/upload")
    assert backend.list("") == ["jobs/ab/config.json"]


@pytest.mark.parametrize("key", ["", "/jobs/x", "jobs//x", "jobs/../x", "jobs/./x", "jobs/.hidden", "jobs/x/"])
def test_keys_that_could_escape_or_hide_are_refused(tmp_path, key):
    with pytest.raises(ValueError):
        FolderBackend(tmp_path).put_bytes(key, b"x")


def test_urls_name_the_backend():
    s3 = backend_from_url("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:1", access_key="k",
                          secret_key="s", region="us-east-1")
    assert isinstance(s3, S3Backend) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert S3Backend.from_url("s3://bucket").prefix == ""
    folder = backend_from_url("file:///srv/chorus%20store")
    assert isinstance(folder, FolderBackend) and folder.root == Path("/srv/chorus store")
    for bad in ("http://x/y", "s3:///prefix", "file://host/path", "bucket/prefix"):
        with pytest.raises(ValueError):
            backend_from_url(bad)


def test_two_prefixes_in_one_bucket_are_apart(request):
    bucket, prefix = request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_prefix")
    first, second = (S3Backend(bucket.bucket, p, endpoint_url=bucket.endpoint_url, access_key=bucket.access_key,
                               secret_key=bucket.secret_key, region=bucket.region) for p in (prefix + "one", prefix + "two"))
    first.put_bytes("jobs/x/config.json", b"1")
    second.put_bytes("jobs/x/config.json", b"2")
    assert first.get_bytes("jobs/x/config.json") == b"1" and second.list("") == ["jobs/x/config.json"]
    first.delete_prefix("")
    assert first.list("") == [] and second.get_bytes("jobs/x/config.json") == b"2"


def test_a_folder_store_writes_by_rename_and_lists_no_temporary_file(tmp_path):
    backend = FolderBackend(tmp_path)
    backend.put_bytes("jobs/j/config.json", b"{}")
    (tmp_path / "jobs" / "j" / ".config.json.abc.tmp").write_bytes(b"half")  # another worker mid-write
    assert backend.list("jobs/") == ["jobs/j/config.json"]
    backend.delete_prefix("jobs/j/")
    assert (tmp_path / "jobs" / "j").is_dir()  # still holds the other writer's file: kept
    (tmp_path / "jobs" / "j" / ".config.json.abc.tmp").unlink()
    backend.put_bytes("jobs/k/config.json", b"{}")
    backend.delete_prefix("jobs/k/")
    assert not (tmp_path / "jobs" / "k").exists()


# ---- large files stream ---------------------------------------------------------------------


def test_an_upload_streams_through_the_store_in_bounded_memory(request, tmp_path):
    """A 320 MiB upload up from the accepting worker and down to the running one, in memory far
    below its size (multipart up, a stream down)."""
    backend = make_s3(request)
    accepting, running = ObjectBlobs(backend, tmp_path / "a"), ObjectBlobs(backend, tmp_path / "b")
    accepting.create("big")
    digest = write_file(accepting.upload_path("big"), 320 * MiB)
    with PeakRss() as up:
        accepting.publish_upload("big")
    with PeakRss() as down:
        path = running.fetch_upload("big")
    assert path == running.upload_path("big") and sha256(path) == digest
    assert running.fetch_upload("big") == path  # there already: not fetched again
    assert up.growth < 128 * MiB, f"upload grew RSS by {up.growth / MiB:.0f} MiB"
    assert down.growth < 128 * MiB, f"download grew RSS by {down.growth / MiB:.0f} MiB"
    accepting.remove("big")
    with pytest.raises(FileNotFoundError):
        ObjectBlobs(backend, tmp_path / "c").fetch_upload("big")


# ---- ObjectBlobs: attempts, logs, local files -------------------------------------------------


def test_a_late_attempt_cannot_replace_what_the_next_attempt_wrote(workers):
    first, second, reader = workers
    first.create("j")
    first.write_outputs("j", {"txt": "attempt one", "json": b"{}"}, attempt=1)
    second.write_outputs("j", {"txt": "attempt two", "json": b'{"a": 2}'}, attempt=2)  # took the job over
    first.write_outputs("j", {"txt": "late attempt one"}, attempt=1)  # the worker thought dead, late
    for blobs in workers:
        assert blobs.read_output("j", "txt", attempt=2) == b"attempt two"
        assert blobs.output_file("j", "json", attempt=2).read_bytes() == b'{"a": 2}'
    assert reader.read_output("j", "txt", attempt=1) == b"late attempt one"
    with pytest.raises(FileNotFoundError):
        reader.output_file("j", "srt", attempt=2)
    with pytest.raises(FileNotFoundError):
        reader.read_output("j", "txt", attempt=3)


def test_an_output_is_downloaded_once_then_served_from_the_local_copy(workers, backend):
    writer, reader, _ = workers
    writer.create("j")
    writer.write_outputs("j", {"srt": "1\n"}, attempt=1)
    path = reader.output_file("j", "srt")
    backend.delete("jobs/j/a1/transcript.srt")  # the copy no longer needs the store
    assert reader.output_file("j", "srt") == path and path.read_bytes() == b"1\n"
    writer.write_outputs("j", {"srt": "2\n"}, attempt=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(workers[2].read_output("j", "srt", attempt=2)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [b"2\n"] * 8  # concurrent first downloads: each sees the whole file


def test_log_lines_reach_another_worker_within_a_second_without_waiting_on_the_network(workers):
    writer, reader, _ = workers
    writer.create("j")
    log = JobLog(writer, "j")
    started = time.perf_counter()
    for i in range(1000):
        log(f"line {i}")
    appending = time.perf_counter() - started
    assert appending < 0.3, f"1000 log lines took {appending:.2f} s: appending waits on the store"
    assert writer.read_log("j").count(b"\n") == 1000  # its own lines at once, sent or not
    took = wait_for(lambda: b"line 999" in _log_or_empty(reader, "j"), timeout=3)
    assert took < 2, f"the other worker saw the lines after {took:.2f} s"
    log("last", "ERROR")
    writer.flush("j")  # the job's end: everything stored now
    lines = reader.read_log("j").decode().splitlines()
    assert len(lines) == 1001 and lines[0].endswith("INFO    line 0") and lines[-1].endswith("ERROR   last")


def _log_or_empty(blobs: ObjectBlobs, job_id: str) -> bytes:
    try:
        return blobs.read_log(job_id)
    except FileNotFoundError:
        return b""


def test_the_log_is_the_attempts_in_order_across_workers(workers):
    accepting, running, taking_over = workers
    accepting.create("j")
    JobLog(accepting, "j")("received")
    accepting.flush("j")  # before handing the job over
    running.create("j")
    JobLog(running, "j")("decoding")  # attempt 1 goes on on another worker
    assert running.read_log("j").decode().count("\n") == 2  # the stored lines, then its unsent one
    running.flush("j")
    taking_over.create("j")
    JobLog(taking_over, "j", attempt=2)("attempt 2: taken over")
    taking_over.flush("j")
    JobLog(running, "j")("late line of attempt 1")
    running.close()
    messages = [line.split(None, 3)[3] for line in accepting.read_log("j").decode().splitlines()]
    assert messages == ["received", "decoding", "late line of attempt 1", "attempt 2: taken over"]


def test_removing_a_job_takes_everything_and_a_pending_flush_cannot_bring_its_log_back(workers, backend):
    blobs, other, _ = workers
    blobs.create("j")
    blobs.upload_path("j").write_bytes(b"upload")
    blobs.publish_upload("j")
    blobs.write_config("j", "{}")
    blobs.write_outputs("j", {"txt": "x"})
    JobLog(blobs, "j")("about to go")  # not flushed yet
    blobs.remove("j")
    time.sleep(blobs.flush_interval * 2)  # the flusher's turn came and went
    assert backend.list("jobs/j/") == [] and not (blobs.scratch / "jobs" / "j").exists()
    JobLog(blobs, "j")("after removal: dropped")
    with pytest.raises(FileNotFoundError):
        other.read_log("j")


def test_dropping_local_files_keeps_the_stored_ones(workers, backend):
    blobs, other, _ = workers
    blobs.create("j")
    blobs.upload_path("j").write_bytes(b"upload")
    blobs.publish_upload("j")
    blobs.write_config("j", '{"type": "transcription"}')
    JobLog(blobs, "j")("handed over")
    blobs.drop_local("j")  # flushes the log first
    assert not (blobs.scratch / "jobs" / "j").exists()
    assert backend.list("jobs/j/") == ["jobs/j/config.json", "jobs/j/log/a1", "jobs/j/upload"]
    assert other.read_config("j") == '{"type": "transcription"}'
    assert other.fetch_upload("j").read_bytes() == b"upload"
    JobLog(blobs, "j")("dropped here: not an error")
    assert other.read_log("j").decode().endswith("handed over\n")
    other.drop_audio("j")  # the stored upload too
    assert backend.list("jobs/j/") == ["jobs/j/config.json", "jobs/j/log/a1"]


def test_close_flushes_every_log(workers):
    blobs, other, _ = workers
    for job in ("j1", "j2"):
        blobs.create(job)
        JobLog(blobs, job)(f"{job} ends")
    blobs.close()
    assert [other.read_log(job).decode().endswith(f"{job} ends\n") for job in ("j1", "j2")] == [True, True]


def test_job_ids_never_become_paths_elsewhere(workers):
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            workers[0].upload_path(bad)
