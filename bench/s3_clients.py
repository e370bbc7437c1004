"""Which S3 client cluster mode's object store uses, chosen by measurement against SeaweedFS.

Each candidate is installed from PyPI, pinned, into its own venv under .cache/s3clients/ (so its
install size is its own), and run there by bench/peer_clients/s3_client.py against one
`weed server -s3` (tests/cluster/seaweed_server.py): a large file streamed up (multipart) and
back down, with peak RSS; then small objects PUT and GET one at a time. Medians over --runs.
Usage: python -m bench.s3_clients [--runs 3] [--size-mib 2048] [--small 200] [--only boto3 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import ROOT, machine, write_section
from tests.cluster.seaweed_server import create_bucket, start_seaweed

PINS = {  # each venv's direct pins (pip resolves the rest; the section lists what it installed)
    "boto3": ["boto3==1.44.5"],
    "minio": ["minio==7.2.20"],
    "obstore": ["obstore==0.12.1"],
    "aioboto3": ["aioboto3==15.5.0"],
}
CANDIDATES = {  # name in the table and in peer_clients/s3_client.py -> (venv, how it ran)
    "boto3": ("boto3", "sync; upload_file/download_file (s3transfer, threads)"),
    "minio": ("minio", "sync; fput_object/fget_object (urllib3)"),
    "obstore": ("obstore", "sync API over Rust object_store; put(file object)/get().stream()"),
    "obstore-backend": ("obstore", "obstore as S3Backend runs it: put(Path), 8 MiB parts"),
    "aioboto3": ("aioboto3", "async, driven from a thread through one event loop"),
}
VENVS = ROOT / ".cache" / "s3clients"
RUNNER = Path(__file__).resolve().parent / "peer_clients" / "s3_client.py"
BASE_PACKAGES = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}


def client_python(name: str) -> Path:
    """The candidate's venv interpreter, installing it (pinned) on first use."""
    venv = CANDIDATES[name][0]
    pins = PINS[venv]
    folder = VENVS / venv
    marker = folder / f".installed-{hashlib.sha1(' '.join(pins).encode()).hexdigest()[:12]}"
    if not marker.exists():
        print(f"installing {name} into {folder} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        with open(folder / "install.log", "wb") as log:
            subprocess.run([str(folder / "bin" / "pip"), "install", *pins], check=True, stdout=log, stderr=log)
        marker.touch()
    return folder / "bin" / "python"


def install_facts(name: str) -> tuple[float, list[str]]:
    """MiB the candidate and its dependencies take in site-packages, and their pins."""
    python = client_python(name)
    site = next((python.parent.parent / "lib").glob("python*/site-packages"))
    size = 0
    for entry in site.iterdir():
        stem = entry.name.split("-")[0]
        if entry.name in BASE_PACKAGES or stem in BASE_PACKAGES or entry.name == "__pycache__":
            continue
        size += entry.stat().st_size if entry.is_file() else sum(
            p.stat().st_size for p in entry.rglob("*") if p.is_file())
    frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], check=True, capture_output=True,
                            text=True).stdout.split()
    return size / 2**20, [p for p in frozen if p.split("==")[0].lower() not in ("pip", "setuptools")]


def make_big_file(path: Path, mib: int) -> str:
    """Random bytes (nothing to compress), written in 16 MiB blocks; returns their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib // 16):
            block = os.urandom(16 * 2**20)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--small-size", type=int, default=2048)
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES))
    args = parser.parse_args()

    facts = {CANDIDATES[name][0]: install_facts(name) for name in args.only}
    work = Path(tempfile.mkdtemp(prefix="chorus-s3bench-"))
    try:
        big = work / "big.bin"
        print(f"writing {args.size_mib} MiB of random bytes ...", flush=True)
        source_sha = make_big_file(big, args.size_mib)
        server = start_seaweed(work / "seaweed")
        try:
            bucket = create_bucket(server, "bench")
            print(f"SeaweedFS up in {server.started_in:.1f} s at {server.endpoint_url}", flush=True)
            results: dict[str, list[dict]] = {name: [] for name in args.only}
            for run in range(args.runs):
                for name in args.only:  # interleaved, so drift hits every candidate alike
                    settings = dict(endpoint_url=bucket.endpoint_url, access_key=bucket.access_key,
                                    secret_key=bucket.secret_key, region=bucket.region, bucket=bucket.bucket,
                                    prefix=f"{name}/{uuid.uuid4().hex}/", big_path=str(big),
                                    out_path=str(work / "down.bin"), small_count=args.small,
                                    small_size=args.small_size)
                    done = subprocess.run([str(client_python(name)), str(RUNNER), name, json.dumps(settings)],
                                          capture_output=True, text=True, timeout=1800)
                    if done.returncode != 0:
                        raise RuntimeError(f"{name} failed:\n{done.stderr[-4000:]}")
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    assert result["download_sha256"] == source_sha, f"{name}: the download differs"
                    results[name].append(result)
                    print(f"run {run + 1} {name}: up {args.size_mib / result['upload_s']:.0f} MiB/s "
                          f"(+{result['upload_peak_mib'] - result['rss_base_mib']:.0f} MiB), down "
                          f"{args.size_mib / result['download_s']:.0f} MiB/s "
                          f"(+{result['download_peak_mib'] - result['rss_base_mib']:.0f} MiB), PUT p50 "
                          f"{statistics.median(result['put_ms']):.2f} ms, GET p50 "
                          f"{statistics.median(result['get_ms']):.2f} ms", flush=True)
                    server.vacuum()  # the deleted big object's space back before the next one
            started_in = server.started_in
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_section("s3_clients", report(args, facts, results, started_in))
    for runs in results.values():  # the raw timings, to 1 µs
        for r in runs:
            r["put_ms"], r["get_ms"] = ([round(v, 3) for v in r[k]] for k in ("put_ms", "get_ms"))
    (ROOT / "docs" / "bench" / "s3_clients.json").write_text(json.dumps(
        {"machine": machine(), "args": vars(args), "install": facts, "results": results}) + "\n")


CHOICE = """**Choice: obstore** (`S3Backend` in gateway/cluster/objects.py, as the `obstore-backend` row runs
it). It is the sync client with the lowest small-object latency, PUT and GET, p50 and p99: about
0.6× boto3's PUT and half its GET at p50 (a job's config, outputs, log flushes and log and output
reads are all small objects). Its large transfers keep pace: uploads of every client land in the
same band (bound by the SeaweedFS server on the same two cores), and its download, slower than
boto3's four ranged GETs, still brings the largest upload Chorus takes down in under 10 s. Its
memory is bounded whatever the file's size (8 MiB parts, 4 in flight: tens of MiB), and the Rust
side signs, hashes and moves the bytes with the GIL released, so the event loop beside it keeps
its timers. It is the smallest install (one package beside typing_extensions, already pinned)
and imports in milliseconds. boto3 comes next, with the least upload memory and the fastest
download, but about twice the latency, a quarter-second import, and botocore requires
python-dateutil < 3 while constraints.txt pins 4.0.0: it cannot join Chorus's pins without
downgrading that. minio is slower on small objects and holds about eight of its parts in memory on
upload. aioboto3 is ruled out: it reads the whole upload into memory (no backpressure on its part
reader), is the slowest on small objects, and an async client buys nothing here, as BlobStore
methods are blocking calls made in threads."""


def report(args, facts, results, started_in: float) -> str:
    def med(name: str, f, fmt: str = "{:.0f}") -> str:
        return fmt.format(statistics.median(f(r) for r in results[name]))

    size = args.size_mib
    large, small = [], []
    for name in results:
        large.append([
            f"**{name}**", CANDIDATES[name][1],
            med(name, lambda r: size / r["upload_s"]),
            med(name, lambda r: r["upload_cpu_s"] * 1024 / size, "{:.1f}"),
            med(name, lambda r: r["upload_peak_mib"] - r["rss_base_mib"], "{:+.0f}"),
            med(name, lambda r: r["upload_tick_p99_ms"], "{:.1f}"),
            med(name, lambda r: size / r["download_s"]),
            med(name, lambda r: r["download_cpu_s"] * 1024 / size, "{:.1f}"),
            med(name, lambda r: r["download_peak_mib"] - r["rss_base_mib"], "{:+.0f}"),
            med(name, lambda r: r["download_tick_p99_ms"], "{:.1f}"),
        ])
        small.append([
            f"**{name}**",
            med(name, lambda r: statistics.median(r["put_ms"]), "{:.2f}"),
            med(name, lambda r: percentile(r["put_ms"], 99), "{:.2f}"),
            med(name, lambda r: statistics.median(r["get_ms"]), "{:.2f}"),
            med(name, lambda r: percentile(r["get_ms"], 99), "{:.2f}"),
            med(name, lambda r: r["import_and_first_call_s"] * 1000),
            f"{facts[CANDIDATES[name][0]][0]:.1f}",
        ])
    venvs = dict.fromkeys(CANDIDATES[name][0] for name in results)
    pins = "\n".join(f"- {venv}: {' '.join(facts[venv][1])}" for venv in venvs)
    return f"""## S3 client choice (bench/s3_clients.py)

{machine()}. SeaweedFS {seaweed_version()} (`weed server -s3`, one process on loopback, data on the same
disk, up in {started_in:.1f} s) shares the 2 cores with the client. Each client runs in its own venv, in
turn, {args.runs} runs; medians of the runs shown. Large object: a {size} MiB (the default
`--max-upload-mb`) local file of random bytes streamed up (multipart, 16 MiB parts, 4 in flight where
the library takes settings) and back down to a local file, checked by sha256. CPU: the client
process's user + system seconds per GiB. RSS: the process's peak over the transfer minus its RSS
before it, MiB. Tick p99: how late a 5 ms sleep in another thread of the process woke (what an
event loop beside the transfer would feel), p99 over the transfer. Small objects: {args.small} ×
{args.small_size / 1024:.0f} KiB PUTs, then as many GETs, one at a time.

| client | how | up MiB/s | up CPU s/GiB | up RSS +MiB | up tick p99 ms | down MiB/s | down CPU s/GiB | down RSS +MiB | down tick p99 ms |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join("| " + " | ".join(row) + " |" for row in large) + """

| client | PUT p50 ms | PUT p99 ms | GET p50 ms | GET p99 ms | import + 1st call ms | install MiB |
|---|---|---|---|---|---|---|
""" + "\n".join("| " + " | ".join(row) + " |" for row in small) + f"""

{CHOICE}

Installed (pip's resolution in each venv; install MiB: its site-packages less pip and setuptools):
{pins}
"""


def seaweed_version() -> str:
    from tests.cluster.seaweed_server import weed_binary

    out = subprocess.run([weed_binary(), "version"], capture_output=True, text=True).stdout.split()
    return out[2] if len(out) > 2 else "?"


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"done in {time.monotonic() - started:.0f} s")
