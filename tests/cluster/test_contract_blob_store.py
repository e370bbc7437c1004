"""The BlobStore contract (gateway/jobs/blobs.py): what any implementation must do. Embedded
mode's folder per job, and cluster mode's ObjectBlobs over a shared folder and over S3 (a real
SeaweedFS server, tests/cluster/seaweed_server.py)."""

from __future__ import annotations

import pytest

from gateway.cluster.objects import FolderBackend, ObjectBlobs, S3Backend
from gateway.jobs.blobs import BlobStore, JobFolders, JobLog


def s3_backend(request, tmp_path):
    bucket, prefix = request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_prefix")
    return S3Backend.from_url(bucket.url(prefix), endpoint_url=bucket.endpoint_url, access_key=bucket.access_key,
                              secret_key=bucket.secret_key, region=bucket.region)


BACKENDS = {"objects-folder": lambda request, tmp_path: FolderBackend(tmp_path / "store"), "objects-s3": s3_backend}


@pytest.fixture(params=["folders", *BACKENDS])
def blobs(request, tmp_path) -> BlobStore:
    if request.param == "folders":
        yield JobFolders(tmp_path / "jobs")
        return
    store = ObjectBlobs(BACKENDS[request.param](request, tmp_path), tmp_path / "scratch")
    yield store
    store.close()


def test_a_jobs_files_round_trip(blobs):
    blobs.create("j1")
    blobs.upload_path("j1").write_bytes(b"RIFF....")
    blobs.write_config("j1", '{"type": "transcription"}')
    blobs.write_outputs("j1", {"json": b'{"results": []}', "txt": "hello", "srt": "1\n"})
    assert blobs.read_output("j1", "json") == b'{"results": []}'
    assert blobs.read_output("j1", "txt") == b"hello"
    blobs.write_outputs("j1", {"txt": "hello again"})  # replaced whole
    assert blobs.read_output("j1", "txt") == b"hello again"
    assert blobs.output_file("j1", "txt").read_bytes() == b"hello again"
    with pytest.raises(FileNotFoundError):
        blobs.read_output("j1", "rttm")
    with pytest.raises(FileNotFoundError):
        blobs.output_file("j1", "rttm")


def test_the_log_appends_and_reads_back(blobs):
    blobs.create("j1")
    with pytest.raises(FileNotFoundError):
        blobs.read_log("j1")
    log = JobLog(blobs, "j1")
    log("first")
    log("second", "ERROR")
    lines = blobs.read_log("j1").decode().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["INFO    first", "ERROR   second"]


def test_dropping_audio_keeps_outputs_and_log_and_removing_keeps_nothing(blobs):
    blobs.create("j1")
    blobs.upload_path("j1").write_bytes(b"upload")
    audio = blobs.audio_path("j1")
    audio.write_bytes(b"\0" * 8)
    audio.with_name(audio.name + ".ch0").write_bytes(b"\0" * 8)  # a split channel beside it
    blobs.write_outputs("j1", {"json": b"{}"})
    JobLog(blobs, "j1")("done")
    blobs.drop_audio("j1")
    assert not blobs.upload_path("j1").exists() and not audio.exists()
    assert not audio.with_name(audio.name + ".ch0").exists()
    assert blobs.read_output("j1", "json") == b"{}" and blobs.read_log("j1")
    blobs.remove("j1")
    with pytest.raises(FileNotFoundError):
        blobs.read_output("j1", "json")
    JobLog(blobs, "j1")("after removal: dropped, not an error")
    blobs.remove("j1")  # nothing left: still fine
    blobs.remove("never-created")


def test_jobs_are_apart(blobs):
    for job in ("a", "b"):
        blobs.create(job)
        blobs.write_outputs(job, {"txt": job})
    blobs.remove("a")
    assert blobs.read_output("b", "txt") == b"b"
