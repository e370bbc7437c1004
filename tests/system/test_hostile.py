"""Bad and hostile input: never a 5xx, never a crash, and the next real job still works."""

from __future__ import annotations

import json

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from chorus_server import text
from speech import wer

GOOD = {"type": "transcription", "transcription_config": {"language": "en"}}
AUDIO = b"RIFF" + b"\0" * 64


def acceptable(response: httpx.Response) -> bool:
    """Below 500, or the reference's own answer to more engines than exist: 503 "Server busy"."""
    if response.status_code < 500:
        return True
    return response.status_code == 503 and response.json().get("detail", "").startswith("Server busy:")


def tc(**fields) -> str:
    return json.dumps({"type": "transcription", "transcription_config": {"language": "en", **fields}})


def top(**fields) -> str:
    return json.dumps({**GOOD, **fields})


def multipart(config: str | bytes, filename: str | bytes = "a.wav", data: bytes = AUDIO,
              boundary: bytes = b"XyZ") -> tuple[bytes, dict]:
    config_bytes = config.encode() if isinstance(config, str) else config
    name = filename.encode() if isinstance(filename, str) else filename
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n" + config_bytes
            + b"\r\n--" + boundary + b"\r\nContent-Disposition: form-data; name=\"data_file\"; filename=\"" + name
            + b"\"\r\nContent-Type: audio/wav\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n")
    return body, {"content-type": "multipart/form-data; boundary=" + boundary.decode()}


def post(config, **kwargs) -> tuple:
    body, headers = multipart(config, **kwargs)
    return ("POST", "/v2/jobs", headers, body)


MP = {"content-type": "multipart/form-data; boundary=XyZ"}

CASES: list[tuple[str, str, dict, bytes | None]] = [
    # broken multipart
    ("POST", "/v2/jobs", {"content-type": "multipart/form-data"}, b"--x\r\n\r\n"),
    ("POST", "/v2/jobs", {"content-type": "multipart/form-data; boundary="}, b""),
    ("POST", "/v2/jobs", MP, b""),
    ("POST", "/v2/jobs", MP, b"--XyZ\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{"),
    ("POST", "/v2/jobs", MP, b"--XyZ\r\n\r\n\r\n--XyZ--\r\n"),
    ("POST", "/v2/jobs", MP, b"garbage without any boundary at all"),
    ("POST", "/v2/jobs", MP, b"--XyZ\r\nNo-Colon-Header\r\n\r\nx\r\n--XyZ--\r\n"),
    ("POST", "/v2/jobs", MP, b"\x00\xff" * 500),
    ("POST", "/v2/jobs", {"content-type": "multipart/form-data; boundary=other"}, multipart(GOOD and top())[0]),
    ("POST", "/v2/jobs", {"content-type": "application/json"}, json.dumps(GOOD).encode()),
    ("POST", "/v2/jobs", {"content-type": "application/x-www-form-urlencoded"}, b"config=%7B%7D"),
    ("POST", "/v2/jobs", {}, None),
    ("POST", "/v2/jobs", {"content-type": "text/plain"}, b"hello"),
    # wrong types at every config level
    post("null"),
    post("5"),
    post('"a string"'),
    post(json.dumps({"type": 5})),
    post(json.dumps({"type": None, "transcription_config": {"language": "en"}})),
    post(json.dumps({"type": "transcription", "transcription_config": "en"})),
    post(json.dumps({"type": "transcription", "transcription_config": []})),
    post(tc(language=None)),
    post(tc(language=["en"])),
    post(tc(model=5)),
    post(tc(operating_point={"x": 1})),
    post(tc(diarization=True)),
    post(tc(diarization="speaker", speaker_diarization_config="loud")),
    post(tc(diarization="speaker", speaker_diarization_config={"speaker_sensitivity": "high"})),
    post(tc(diarization="speaker", speaker_diarization_config={"speaker_sensitivity": -0.1})),
    post(tc(diarization="speaker", speaker_diarization_config={"prefer_current_speaker": "yes"})),
    post(tc(diarization="speaker", speaker_diarization_config={"speakers": {"label": "A"}})),
    post(tc(channel_diarization_labels="left")),
    post(tc(channel_diarization_labels=["has space"])),
    post(top(output_config=[])),
    post(top(output_config={"srt_overrides": {"max_line_length": "wide"}})),
    post(top(output_config={"srt_overrides": {"max_lines": 10**20}})),
    post(top(output_config={"srt_overrides": {"max_line_length": -4}})),
    post(top(fetch_data={"url": 5})),
    post(top(fetch_data="http://x")),
    post(top(notification_config={"url": "http://x"})),
    post(top(notification_config=[{"url": "http://x", "method": "delete"}])),
    post(top(notification_config=[{"url": "http://x", "contents": ["everything"]}])),
    post(top(tracking="label")),
    # invalid UTF-8
    post(b'{"type": "transcription", "transcription_config": {"language": "\xff\xfe"}}'),
    post(top(), filename=b"\xff\xfe\xfd.wav"),
    # negative, huge and strange numbers
    ("POST", "/v2/jobs", {**multipart(top())[1], "X-SM-Processing-Data": '{"parallel_engines": -1}'}, multipart(top())[0]),
    ("POST", "/v2/jobs", {**multipart(top())[1], "X-SM-Processing-Data": '{"parallel_engines": 1e400}'},
     multipart(top())[0]),
    ("POST", "/v2/jobs", {**multipart(top())[1], "X-SM-Processing-Data": '{"parallel_engines": 100000000000000000000000}'},
     multipart(top())[0]),
    ("POST", "/v2/jobs", {**multipart(top())[1], "X-SM-Processing-Data": '{"user_id": 5}'}, multipart(top())[0]),
    ("POST", "/v2/jobs", {**multipart(top())[1], "X-SM-Processing-Data": "NaN"}, multipart(top())[0]),
    ("GET", "/v2/jobs?limit=-5", {}, None),
    ("GET", "/v2/jobs?limit=99999999999999999999999", {}, None),
    ("GET", "/v2/jobs?limit=NaN", {}, None),
    ("GET", "/v2/jobs?created_before=9999-99-99", {}, None),
    ("GET", "/v2/jobs?created_after=%00", {}, None),
    ("GET", "/v2/jobs/abc?wait=1e309", {}, None),
    ("GET", "/v2/jobs/abc?wait=-1", {}, None),
    ("DELETE", "/v2/jobs/abc?force=2", {}, None),
    # nesting: past msgspec's own limit (it raises RecursionError), and past the worker's 64 levels
    post('{"type": "transcription", "transcription_config": {"language": "en"}, "x": ' + "[" * 50000 + "]" * 50000 + "}"),
    post("[" * 50000 + "]" * 50000),
    post('{"a": ' * 50000 + "1" + "}" * 50000),
    post(top(tracking={"details": json.loads('{"a": ' * 100 + "1" + "}" * 100)})),
    post(tc(additional_vocab=json.loads("[" * 900 + "]" * 900))),
    # (10 kB: past msgspec's depth, within the 16 kB of incomplete headers Hypercorn buffers)
    ("POST", "/v2/jobs", {**multipart(top())[1], "X-SM-Processing-Data": "[" * 5000 + "]" * 5000},
     multipart(top())[0]),
    ("POST", "/v2/jobs", {**multipart(top())[1], "X-SM-Processing-Data": '{"user_id": ' + '{"a": ' * 500
                          + "1" + "}" * 501}, multipart(top())[0]),
    # huge numbers in the config
    post('{"type": "transcription", "transcription_config": {"language": "en"}, '
         '"output_config": {"srt_overrides": {"max_lines": ' + "9" * 5000 + "}}}"),
    post('{"type": "transcription", "transcription_config": {"language": "en", '
         '"speaker_diarization_config": {"speaker_sensitivity": 1e999999}}}'),
    # huge headers
    ("POST", "/v2/jobs", {**multipart(top())[1], "X-SM-Processing-Data": '{"user_id": "' + "u" * 60000 + '"}'},
     multipart(top())[0]),
    ("GET", "/v2/jobs", {f"X-Junk-{i}": "v" * 100 for i in range(100)}, None),
    # path tricks in ids and filenames
    ("GET", "/v2/jobs/..%2F..%2Fetc%2Fpasswd", {}, None),
    ("GET", "/v2/jobs/%2e%2e/transcript", {}, None),
    ("GET", "/v2/jobs/" + "a" * 5000, {}, None),
    ("GET", "/v2/jobs/abc%00def/log", {}, None),
    ("GET", "/v2/jobs/%F0%9F%98%80/transcript?format=txt", {}, None),
    ("DELETE", "/v2/jobs/..?force=true", {}, None),
    post(top(), filename="../../../../etc/passwd"),
    post(top(), filename="C:\\Windows\\system32\\evil.wav"),
    post(top(), filename="a\x00b.wav"),
    # unknown fields are accepted and ignored
    post(json.dumps({**GOOD, "surprise": {"nested": [1, 2]}, "transcription_config": {"language": "en", "x": 1}})),
    # methods and routes that do not exist
    ("PATCH", "/v2/jobs", {}, b"{}"),
    ("PUT", "/jobs", {}, None),
    ("GET", "/v3/jobs", {}, None),
]


def test_the_malformed_list_never_breaks_the_server(idle_server, speech):
    assert len(CASES) >= 50
    statuses = []
    with httpx.Client(base_url=idle_server.url, timeout=60) as client:
        for method, path, headers, body in CASES:
            response = client.request(method, path, headers=headers, content=body)
            statuses.append(response.status_code)
            assert acceptable(response), (method, path, response.text[:300])
            if response.status_code >= 400:
                assert response.headers.get("content-type") == "application/json", (
                    method, path, body[:80] if body else None, response.status_code, response.text[:200])
                payload = response.json()
                assert payload["code"] == response.status_code and payload["detail"], payload
    assert statuses.count(201) >= 4  # the odd filenames and the unknown fields are fine jobs
    idle_server.wait_idle()
    assert idle_server.process.poll() is None
    assert idle_server.http.get("/jobs").json()["unused_engines"] == 2
    assert wer(speech[1], text(idle_server.transcribe(speech[0]))) <= 0.1
    assert not (idle_server.output.parent / "etc").exists()


NESTED_CONFIGS = [
    '{"type": "transcription", "transcription_config": {"language": "en"}, "x": ' + "[" * 50000 + "]" * 50000 + "}",
    "[" * 50000 + "]" * 50000,
    top(tracking={"details": json.loads('{"a": ' * 100 + "1" + "}" * 100)}),
]
NESTED_HEADERS = ["[" * 5000 + "]" * 5000, '{"user_id": ' + '{"a": ' * 500 + "1" + "}" * 501]


def test_deep_nesting_is_a_400_and_creates_no_job(idle_server):
    """A config or X-SM-Processing-Data nested deeper than any real one: 400 saying so, no job."""
    jobs_before = idle_server.http.get("/v2/jobs").json()["jobs"]
    for config in NESTED_CONFIGS:
        body, headers = multipart(config)
        response = idle_server.http.post("/v2/jobs", content=body, headers=headers)
        assert response.status_code == 400 and "nests lists and objects more than 64 levels" in \
            response.json()["detail"], response.text[:300]
    for header in NESTED_HEADERS:
        body, headers = multipart(top())
        response = idle_server.http.post("/v2/jobs", content=body, headers={**headers, "X-SM-Processing-Data": header})
        assert response.status_code == 400 and "X-SM-Processing-Data nests" in response.json()["detail"]
    assert idle_server.http.get("/v2/jobs").json()["jobs"] == jobs_before
    assert idle_server.http.get("/jobs").json()["unused_engines"] == 2


def test_schemathesis_finds_no_server_error(idle_server, speech):
    schema = schemathesis.openapi.from_url(f"{idle_server.url}/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case) -> None:
            response = case.call(base_url=idle_server.url, timeout=60)
            assert acceptable(response), f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"

        call()
        checked += 1
    assert checked >= 10
    idle_server.wait_idle()
    assert idle_server.process.poll() is None
    assert wer(speech[1], text(idle_server.transcribe(speech[0]))) <= 0.1


def test_a_refused_body_closes_the_connection(idle_server):
    """A body refused before it was read (here for its content type) leaves bytes on the
    connection: the answer says "Connection: close", so the client's next request opens a new
    one instead of racing the server's close."""
    with httpx.Client(base_url=idle_server.url, timeout=60) as client:
        for _ in range(20):
            refused = client.post("/v2/jobs", content=b"config=%7B%7D",
                                  headers={"content-type": "application/x-www-form-urlencoded"})
            assert refused.status_code == 400 and refused.headers["connection"] == "close"
            assert client.post("/v2/jobs").status_code == 400
        assert client.get("/jobs").status_code == 200
