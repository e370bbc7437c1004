"""Cluster mode's settings from the flags and the environment (gateway/cli.py reads both)."""

from __future__ import annotations

import pytest

from gateway.cli import build_cluster, build_parser

DB = "postgresql://chorus@db:5432/chorus"


def cluster(argv: list[str], monkeypatch, **env: str):
    for name in ("CHORUS_DATABASE_URL", "CHORUS_OBJECT_STORE", "CHORUS_LEASE_SECONDS", "CHORUS_WORKER_ID",
                 "CHORUS_ADVERTISE_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_REGION", "AWS_DEFAULT_REGION", "SM_BATCH_WORKER_LISTEN_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return build_cluster(build_parser().parse_args(["serve", *argv]))


def test_without_a_database_the_worker_is_embedded(monkeypatch):
    assert cluster([], monkeypatch) is None


def test_flags(monkeypatch):
    settings = cluster(["--database-url", DB, "--object-store", "s3://bucket/prod", "--lease-seconds", "12",
                        "--worker-id", "pod-1", "--advertise-url", "http://10.0.0.7:18000"], monkeypatch,
                       AWS_ENDPOINT_URL="http://s3:8333", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
                       AWS_REGION="eu-west-1")
    assert (settings.database_url, settings.object_store, settings.lease_seconds) == (DB, "s3://bucket/prod", 12.0)
    assert (settings.worker_id, settings.advertise_url) == ("pod-1", "http://10.0.0.7:18000")
    assert (settings.s3_endpoint_url, settings.s3_access_key, settings.s3_secret_key, settings.s3_region) == \
        ("http://s3:8333", "k", "s", "eu-west-1")


def test_environment_and_defaults(monkeypatch):
    settings = cluster(["--port", "18111"], monkeypatch, CHORUS_DATABASE_URL=DB,
                       CHORUS_OBJECT_STORE="file:///shared/chorus")
    assert settings.object_store == "file:///shared/chorus" and settings.lease_seconds == 30.0
    assert settings.worker_id.endswith(":18111") and settings.advertise_url.endswith(":18111")
    assert settings.s3_endpoint_url is None


@pytest.mark.parametrize("argv, env", [
    (["--object-store", "s3://b/p"], {}),  # a store without a database
    (["--database-url", DB], {}),  # a database without a store
    (["--database-url", DB, "--object-store", "/shared"], {}),  # not a URL
    ([], {"CHORUS_DATABASE_URL": DB, "CHORUS_OBJECT_STORE": "gs://bucket"}),
])
def test_incomplete_cluster_settings_exit_with_a_message(monkeypatch, argv, env):
    with pytest.raises(SystemExit) as exit:
        cluster(argv, monkeypatch, **env)
    assert "chorus:" in str(exit.value.code)
