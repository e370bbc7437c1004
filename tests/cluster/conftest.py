"""Real servers for cluster mode: a throwaway PostgreSQL cluster and a SeaweedFS S3 server,
each started once per session."""

from tests.cluster.postgres_server import database_url, postgres_url  # noqa: F401  (fixtures)
from tests.cluster.seaweed_server import s3_bucket, s3_prefix  # noqa: F401
