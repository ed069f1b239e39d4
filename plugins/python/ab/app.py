"""A/B bucketing, in Python: puts every request in one bucket of an experiment, tells the
upstream which (a header), tells later filters (metadata ``ab.bucket``), and optionally
routes a bucket to its own cluster.

The bucket is, first match wins:

1. forced by the client: header ``x-ab-force`` or cookie ``ab`` naming a known bucket
   (for QA; any other value is ignored);
2. sticky by key: FNV-1a (32-bit) of header ``key_header`` (``x-user-id`` by default),
   modulo the number of buckets, so a user stays in one bucket across requests and
   gateways;
3. without a key: the first bucket (so anonymous traffic sees the control).

    kind = "inbound"
    [config]
    buckets = ["control", "treatment"]   # default
    header = "x-ab-bucket"               # header set on the request, default
    key_header = "x-user-id"             # default
    clusters = { treatment = "api-b" }   # optional: bucket -> cluster
"""

from portcullis_sdk import Changes, Filter, config, cookie, metrics

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def fnv1a(key: str) -> int:
    h = FNV_OFFSET
    for b in key.encode("utf-8"):
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


class Settings:
    """The manifest's config, read once per instance (the first call)."""

    def __init__(self) -> None:
        buckets = config.parse("buckets", ["control", "treatment"])
        if not isinstance(buckets, list) or not buckets:
            buckets = ["control", "treatment"]
        self.buckets = [str(b) for b in buckets]
        self.header = config.get_or("header", "x-ab-bucket").lower()
        self.key_header = config.get_or("key_header", "x-user-id")
        clusters = config.parse("clusters", {})
        self.clusters = clusters if isinstance(clusters, dict) else {}


_settings = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


class WitWorld(Filter):
    def on_request(self, req):
        s = settings()
        forced = req.header("x-ab-force") or cookie(req, "ab")
        if forced in s.buckets:
            bucket, why = forced, "forced"
        else:
            key = req.header(s.key_header)
            if key:
                bucket, why = s.buckets[fnv1a(key) % len(s.buckets)], "key"
            else:
                bucket, why = s.buckets[0], "default"
        metrics.count(f"bucket_{bucket}")
        ch = Changes().set_header(s.header, bucket).meta("ab.bucket", bucket).meta("ab.why", why)
        cluster = s.clusters.get(bucket)
        if isinstance(cluster, str) and cluster:
            ch.cluster(cluster)
        return ch.inbound()
