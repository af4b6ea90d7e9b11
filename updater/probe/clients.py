"""The probe's service clients: ZooKeeper writes, HTTP through the VIP, S3 writes and reads.

Each client makes exactly one attempt per `attempt()` call, bounded by the given timeout, and leaves
retrying to the runner, so retries are counted in one place. Library-level retries are switched off.

The clients behave like latency-sensitive clients on a LAN: a TCP connection that is not established within
:data:`CONNECT_TIMEOUT_S` is given up and retried (inside the operation's deadline, counted as a retry), and
ZooKeeper reconnects every :data:`ZOOKEEPER_RECONNECT_MAX_S` at most. Otherwise a SYN sent to the VIP's
previous holder in the instant before the network learnt the new one waits for the kernel's 1 s SYN
retransmission, and the gap would measure that back-off rather than the service.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import threading
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from updater.probe.runner import DataError

CONNECT_TIMEOUT_S = 0.25
ZOOKEEPER_RECONNECT_MAX_S = 0.1


class HttpCheck:
    """A GET through the cluster's VIP on a fresh connection (so a moved VIP or a dead backend shows)."""

    def __init__(self, url: str, name: str = "vip") -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"probe URL must be http(s)://host[:port]/path, got {url!r}")
        self.name = name
        self._parsed = parsed

    def setup(self) -> None:
        self.attempt(timeout=5.0)

    def attempt(self, timeout: float) -> None:
        cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
        conn = cls(self._parsed.hostname or "", self._parsed.port, timeout=min(timeout, CONNECT_TIMEOUT_S))
        try:
            conn.connect()
            conn.sock.settimeout(timeout)
            conn.request("GET", self._parsed.path or "/", headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        if response.status >= 500:
            raise ConnectionError(f"HTTP {response.status} from {self._parsed.netloc}")

    def close(self) -> None:
        return None


class ZooKeeperWriter:
    """Writes a counter to a znode through the whole ensemble and reads it back."""

    def __init__(self, hosts: str, path: str = "/corral/probe", name: str = "zookeeper") -> None:
        self.name = name
        self.path = f"{path}/{uuid.uuid4().hex[:12]}"
        # Reconnection is kazoo's job (connection_retry); operation retries are the runner's.
        self._zk: Any = KazooClient(
            hosts=hosts,
            timeout=10.0,
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=ZOOKEEPER_RECONNECT_MAX_S),
            command_retry=None,
        )
        self._counter = 0

    def setup(self) -> None:
        self._zk.start(timeout=15)
        self._zk.ensure_path(self.path)

    def attempt(self, timeout: float) -> None:
        self._counter += 1
        value = str(self._counter).encode()
        self._zk.set_async(self.path, value).get(timeout=timeout)
        data, _ = self._zk.get_async(self.path).get(timeout=timeout)
        if data != value:
            raise DataError(f"read back {data!r} after writing {value!r}")

    def close(self) -> None:
        # Bounded: the probe must stop promptly even when the ensemble is unreachable at the end.
        try:
            # the znode is the probe's own scratch space: failing to remove it is harmless
            with contextlib.suppress(Exception):
                self._zk.delete_async(self.path).get(timeout=5)
        finally:
            self._zk.stop()
            self._zk.close()


def _s3_client(endpoint: str, access_key: str, secret_key: str, timeout: float) -> Any:
    config = Config(
        connect_timeout=min(timeout, CONNECT_TIMEOUT_S),
        read_timeout=timeout,
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="default",
        config=config,
    )


class S3Writer:
    """PUTs fresh objects and GETs each back; remembers them for the integrity check at the end."""

    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, bucket: str, *, name: str = "s3-write"
    ) -> None:
        self.name = name
        self.bucket = bucket
        self._args = (endpoint, access_key, secret_key)
        self._local = threading.local()
        self.written: dict[str, str] = {}  # key -> sha256 of the body

    def _client(self, timeout: float) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = _s3_client(*self._args, timeout=max(timeout, 1.0))
            self._local.client = client
        return client

    def setup(self) -> None:
        client = self._client(5.0)
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if self.bucket not in existing:
            client.create_bucket(Bucket=self.bucket)

    def attempt(self, timeout: float) -> None:
        key = f"probe/{uuid.uuid4().hex}"
        body = os.urandom(4096)
        client = self._client(timeout)
        client.put_object(Bucket=self.bucket, Key=key, Body=body)
        got = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        if got != body:
            raise DataError(f"object {key} read back differs from what was written")
        self.written[key] = hashlib.sha256(body).hexdigest()

    def verify_written(self, workers: int = 16) -> list[str]:
        """Keys whose object is missing or altered now (empty when every object is intact).

        A rollout-long probe writes thousands of objects; they are read back in parallel so the
        check takes seconds, not minutes (each worker thread has its own S3 client).
        """

        def intact(item: tuple[str, str]) -> bool:
            key, digest = item
            try:
                body = self._client(10.0).get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except Exception:  # a missing object is exactly what we report
                return False
            return hashlib.sha256(body).hexdigest() == digest

        items = sorted(self.written.items())
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(intact, items))
        return [key for (key, _), ok in zip(items, results, strict=True) if not ok]

    def close(self) -> None:
        return None


class S3Reader:
    """GETs objects written before the rollout started and checks their content."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        objects: int = 16,
        name: str = "s3-read",
    ) -> None:
        self.name = name
        self.bucket = bucket
        self._writer = S3Writer(endpoint, access_key, secret_key, bucket, name=name)
        self._objects = objects
        self._next = 0

    def setup(self) -> None:
        self._writer.setup()
        for _ in range(self._objects):
            self._writer.attempt(timeout=10.0)
        self._keys = sorted(self._writer.written)

    def attempt(self, timeout: float) -> None:
        key = self._keys[self._next % len(self._keys)]
        self._next += 1
        body = self._writer._client(timeout).get_object(Bucket=self.bucket, Key=key)["Body"].read()
        if hashlib.sha256(body).hexdigest() != self._writer.written[key]:
            raise DataError(f"pre-written object {key} has changed")

    def close(self) -> None:
        return None
