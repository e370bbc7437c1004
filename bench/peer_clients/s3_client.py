"""One S3 client library measured against a running S3 server, run in that library's own venv
(bench/s3_clients.py installs it there), standard library besides.

Streams a large local file up (multipart, 16 MiB parts, 4 at a time where the library lets one
choose) and back down to a local file, each with the process's peak RSS and CPU time over it and
how late a 5 ms timer in another thread woke meanwhile; then PUTs and GETs small objects one after
the other, timing each; prints one JSON object.
Usage: python s3_client.py CLIENT SETTINGS_JSON
  SETTINGS_JSON: endpoint_url, access_key, secret_key, region, bucket, prefix, big_path, out_path,
  small_count, small_size
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import sys
import threading
import time

PART = 16 * 1024 * 1024
CONCURRENCY = 4


def rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS
        f.write("5")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Ticker:
    """A thread that asks to sleep 5 ms again and again, as an event loop's timers would, and keeps
    how late it woke: how long the transfer held the GIL (or the CPU) from the rest of the process."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            time.sleep(0.005)
            self.late_ms.append((time.perf_counter() - t - 0.005) * 1000)

    def __enter__(self) -> Ticker:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def p99(self) -> float:
        ordered = sorted(self.late_ms)
        return ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0


class Boto3:
    def __init__(self, s: dict) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.s3 = boto3.client("s3", endpoint_url=s["endpoint_url"], aws_access_key_id=s["access_key"],
                               aws_secret_access_key=s["secret_key"], region_name=s["region"],
                               config=Config(s3={"addressing_style": "path"}))
        self.transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                                       max_concurrency=CONCURRENCY)
        self.bucket = s["bucket"]

    def put_file(self, key, path):
        self.s3.upload_file(path, self.bucket, key, Config=self.transfer)

    def get_file(self, key, path):
        self.s3.download_file(self.bucket, key, path, Config=self.transfer)

    def put_bytes(self, key, data):
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get_bytes(self, key):
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def delete(self, key):
        self.s3.delete_object(Bucket=self.bucket, Key=key)


class MinIO:
    def __init__(self, s: dict) -> None:
        from minio import Minio

        host = s["endpoint_url"].split("://", 1)[1]
        self.mc = Minio(host, access_key=s["access_key"], secret_key=s["secret_key"], secure=False,
                        region=s["region"])
        self.bucket = s["bucket"]

    def put_file(self, key, path):
        self.mc.fput_object(bucket_name=self.bucket, object_name=key, file_path=path, part_size=PART,
                            num_parallel_uploads=CONCURRENCY)

    def get_file(self, key, path):
        self.mc.fget_object(bucket_name=self.bucket, object_name=key, file_path=path)

    def put_bytes(self, key, data):
        self.mc.put_object(bucket_name=self.bucket, object_name=key, data=io.BytesIO(data), length=len(data))

    def get_bytes(self, key):
        response = self.mc.get_object(bucket_name=self.bucket, object_name=key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def delete(self, key):
        self.mc.remove_object(bucket_name=self.bucket, object_name=key)


class Obstore:
    def __init__(self, s: dict) -> None:
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        self.store = S3Store(s["bucket"], endpoint=s["endpoint_url"], access_key_id=s["access_key"],
                             secret_access_key=s["secret_key"], region=s["region"],
                             virtual_hosted_style_request=False, client_options={"allow_http": True})

    def put_file(self, key, path):
        with open(path, "rb") as f:
            self.obs.put(self.store, key, f, chunk_size=PART, max_concurrency=CONCURRENCY)

    def get_file(self, key, path):
        with open(path, "wb") as f:
            for chunk in self.obs.get(self.store, key).stream(min_chunk_size=PART // 2):
                f.write(chunk)

    def put_bytes(self, key, data):
        self.obs.put(self.store, key, data)

    def get_bytes(self, key):
        return bytes(self.obs.get(self.store, key).bytes())

    def delete(self, key):
        self.obs.delete(self.store, key)


class ObstoreAsBackend(Obstore):
    """obstore as gateway/cluster/objects.py's S3Backend runs it: 8 MiB parts, the file by path."""

    def put_file(self, key, path):
        import pathlib

        self.obs.put(self.store, key, pathlib.Path(path), chunk_size=PART // 2, max_concurrency=CONCURRENCY)


class AioBoto3:
    """The async client driven from blocking code, as a BlobStore in a thread would: one event loop
    kept running in a thread of its own, every call a coroutine sent to it."""

    def __init__(self, s: dict) -> None:
        import asyncio
        import threading

        import aioboto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.asyncio = asyncio
        self.transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                                       max_concurrency=CONCURRENCY)
        self.bucket = s["bucket"]
        session = aioboto3.Session()
        self.context = session.client("s3", endpoint_url=s["endpoint_url"], aws_access_key_id=s["access_key"],
                                      aws_secret_access_key=s["secret_key"], region_name=s["region"],
                                      config=Config(s3={"addressing_style": "path"}))
        self.s3 = self._run(self.context.__aenter__())

    def _run(self, coroutine):
        return self.asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def put_file(self, key, path):
        self._run(self.s3.upload_file(path, self.bucket, key, Config=self.transfer))

    def get_file(self, key, path):
        self._run(self.s3.download_file(self.bucket, key, path, Config=self.transfer))

    def put_bytes(self, key, data):
        self._run(self.s3.put_object(Bucket=self.bucket, Key=key, Body=data))

    def get_bytes(self, key):
        async def get():
            response = await self.s3.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                return await body.read()
        return self._run(get())

    def delete(self, key):
        self._run(self.s3.delete_object(Bucket=self.bucket, Key=key))


CLIENTS = {"boto3": Boto3, "minio": MinIO, "obstore": Obstore, "obstore-backend": ObstoreAsBackend,
           "aioboto3": AioBoto3}


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    name, settings = sys.argv[1], json.loads(sys.argv[2])
    started = time.perf_counter()
    client = CLIENTS[name](settings)
    prefix = settings["prefix"]
    client.put_bytes(prefix + "warm", b"x")  # connection, signing and first-call costs out of the timings
    client.get_bytes(prefix + "warm")
    result = {"client": name, "import_and_first_call_s": time.perf_counter() - started,
              "rss_base_mib": rss_mib("VmRSS")}

    big, out = settings["big_path"], settings["out_path"]
    for step, transfer in (("upload", lambda: client.put_file(prefix + "big", big)),
                           ("download", lambda: client.get_file(prefix + "big", out))):
        reset_peak()
        cpu, t = cpu_s(), time.perf_counter()
        with Ticker() as ticker:
            transfer()
        result[f"{step}_s"] = time.perf_counter() - t
        result[f"{step}_cpu_s"] = cpu_s() - cpu
        result[f"{step}_peak_mib"] = rss_mib("VmHWM")
        result[f"{step}_tick_p99_ms"] = ticker.p99()
    result["download_sha256"] = sha256(out)
    os.unlink(out)
    client.delete(prefix + "big")

    data = os.urandom(settings["small_size"])
    puts, gets = [], []
    for i in range(settings["small_count"]):
        t = time.perf_counter()
        client.put_bytes(f"{prefix}small/{i}", data)
        puts.append((time.perf_counter() - t) * 1000)
    for i in range(settings["small_count"]):
        t = time.perf_counter()
        got = client.get_bytes(f"{prefix}small/{i}")
        gets.append((time.perf_counter() - t) * 1000)
        assert got == data, f"object {i} came back different"
    for i in range(settings["small_count"]):
        client.delete(f"{prefix}small/{i}")
    client.delete(prefix + "warm")
    result.update(put_ms=puts, get_ms=gets)
    print(json.dumps(result), flush=True)
    os._exit(0)  # the async client's loop thread and the libraries' pools: no slow teardown


if __name__ == "__main__":
    main()
