"""Streamed, bounded, safe copy of a provider output URL into S3.

The URL comes from the provider, so it is treated as untrusted input: https only, allow-listed
hosts, public addresses only, redirects re-checked hop by hop, size capped while streaming, and the
first bytes must be an MP4. The body flows through boto3's managed multipart upload in chunks, so
memory stays flat whatever the video size; any failure aborts the upload, so nothing partial is
ever visible under ``outputs/``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from s2v.errors import DeliveryError

MAX_REDIRECTS = 3
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class DeliveryPolicy:
    allowed_hosts: tuple[str, ...]  # exact names or "*.example.com" (any subdomain, not the apex)
    max_bytes: int
    allow_loopback_http: bool = False  # local mode: http://127.0.0.1 / localhost
    allowed_content_types: tuple[str, ...] = ("video/mp4", "application/octet-stream", "binary/octet-stream")
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class DeliveredObject:
    bucket: str
    key: str
    size: int
    etag: str
    content_type: str


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def _address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_link_local)


Resolver = Callable[..., list[tuple[Any, ...]]]


def check_url(url: str, policy: DeliveryPolicy, *, resolve: Resolver = socket.getaddrinfo) -> None:
    """Raise DeliveryError unless ``url`` is one we are willing to download from."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise DeliveryError(f"the output URL carries credentials ({host}); refusing to follow it")
    if not host:
        raise DeliveryError("the output URL has no host")
    loopback = policy.allow_loopback_http and host in LOOPBACK_NAMES
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise DeliveryError(f"the output URL must use https, not {parts.scheme or 'no scheme'}")
    if not host_allowed(host, policy.allowed_hosts):
        raise DeliveryError(f"output URL host {host} is not on the allow-list S2V_OUTPUT_ALLOWED_HOSTS "
                            f"({', '.join(policy.allowed_hosts)})")
    try:
        infos = resolve(host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeliveryError(f"could not resolve output host {host}: {exc}", retryable=True) from exc
    addresses = {info[4][0] for info in infos}
    if not addresses:
        raise DeliveryError(f"output host {host} resolves to no address", retryable=True)
    blocked = sorted(a for a in addresses if not _address_allowed(a, policy.allow_loopback_http))
    if blocked:
        raise DeliveryError(f"output host {host} resolves to a non-public address ({', '.join(blocked)}); "
                            "refusing to download from it")


class _MP4Stream:
    """A read-only, non-seekable file over the response body that counts bytes, enforces the
    size cap and checks the MP4 signature before any byte reaches S3."""

    def __init__(self, chunks: Iterator[bytes], *, max_bytes: int, expected: int | None) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._max = max_bytes
        self._expected = expected
        self.total = 0
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                break
            except (requests.RequestException, OSError) as exc:
                raise self._interrupted() from exc
            self.total += len(chunk)
            if self.total > self._max:
                raise DeliveryError(f"the output is larger than the cap of {_mb(self._max)} (S2V_MAX_OUTPUT_BYTES)")
            self._buffer += chunk
            if not self._checked and len(self._buffer) >= 12:
                self._check_signature()
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        if not data:
            self._finish()
        return data

    def _check_signature(self) -> None:
        self._checked = True
        if self._buffer[4:8] != b"ftyp":
            raise DeliveryError("the output is not an MP4 video (no 'ftyp' box at the start)")

    def _finish(self) -> None:
        if not self._checked:
            raise DeliveryError("the output is empty or too short to be an MP4 video")
        if self._expected is not None and self.total != self._expected:
            raise self._interrupted()

    def _interrupted(self) -> DeliveryError:
        of = f" of {_mb(self._expected)}" if self._expected else ""
        return DeliveryError(f"download stopped after {_mb(self.total)}{of}: the provider connection was "
                             "interrupted", retryable=True)


def _mb(n: int | None) -> str:
    return f"{(n or 0) / 1_000_000:.1f} MB"


def _open(url: str, policy: DeliveryPolicy, session: requests.Session, resolve: Resolver) -> requests.Response:
    for _hop in range(MAX_REDIRECTS + 1):
        check_url(url, policy, resolve=resolve)
        try:
            response = session.get(url, stream=True, allow_redirects=False,
                                   timeout=(policy.connect_timeout, policy.read_timeout))
        except requests.RequestException as exc:
            raise DeliveryError(f"could not reach the output URL: {type(exc).__name__}", retryable=True) from exc
        if response.is_redirect:
            location = response.headers.get("Location", "")
            response.close()
            url = urljoin(url, location)
            continue
        return response
    raise DeliveryError(f"the output URL redirected more than {MAX_REDIRECTS} times")


def _check_response(response: requests.Response, policy: DeliveryPolicy) -> int | None:
    if response.status_code in (403, 404, 410):
        raise DeliveryError(f"the output URL answered {response.status_code}: it has expired or does not exist; "
                            "run `s2v retry JOB` to render again")
    if response.status_code >= 500 or response.status_code == 429:
        raise DeliveryError(f"the output URL answered {response.status_code}", retryable=True)
    if response.status_code != 200:
        raise DeliveryError(f"the output URL answered {response.status_code}")
    content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type not in policy.allowed_content_types:
        raise DeliveryError(f"the output has content type {content_type or 'none'}, not a video "
                            f"({', '.join(policy.allowed_content_types)})")
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None  # absent: capped while streaming
    if expected is not None and expected > policy.max_bytes:
        raise DeliveryError(f"the output is {_mb(expected)}, over the cap of {_mb(policy.max_bytes)} "
                            "(S2V_MAX_OUTPUT_BYTES)")
    return expected


def copy_url_to_s3(url: str, *, s3_client: Any, bucket: str, key: str, policy: DeliveryPolicy,
                   metadata: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
                   session: requests.Session | None = None,
                   resolve: Resolver = socket.getaddrinfo) -> DeliveredObject:
    from boto3.s3.transfer import TransferConfig

    session = session or requests.Session()
    response = _open(url, policy, session, resolve)
    with response:
        expected = _check_response(response, policy)
        stream = _MP4Stream(response.iter_content(chunk_size=1024 * 1024), max_bytes=policy.max_bytes,
                            expected=expected)
        extra: dict[str, Any] = {"ContentType": "video/mp4", "Metadata": dict(metadata or {})}
        if tags:
            extra["Tagging"] = urlencode(dict(tags))
        config = TransferConfig(multipart_threshold=policy.chunk_size, multipart_chunksize=policy.chunk_size,
                                max_concurrency=2, use_threads=True)
        # A non-seekable body is read ahead in whole parts; cap how many parts sit in memory.
        config.max_in_memory_upload_chunks = 2
        try:
            # s3transfer aborts its multipart upload when the body raises: no parts are left behind.
            s3_client.upload_fileobj(stream, bucket, key, ExtraArgs=extra, Config=config)
        except DeliveryError:
            raise
        except Exception as exc:
            cause = exc
            while cause.__cause__ or cause.__context__:
                if isinstance(cause, DeliveryError):
                    raise cause from exc
                cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
            if isinstance(cause, DeliveryError):
                raise cause from exc
            raise DeliveryError(f"writing the video to S3 failed: {type(exc).__name__}", retryable=True) from exc
    head = s3_client.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != stream.total:
        s3_client.delete_object(Bucket=bucket, Key=key)
        raise DeliveryError(f"the stored video has {head['ContentLength']} bytes, not the {stream.total} "
                            "downloaded; it was removed", retryable=True)
    return DeliveredObject(bucket=bucket, key=key, size=stream.total, etag=head["ETag"].strip('"'),
                           content_type="video/mp4")
