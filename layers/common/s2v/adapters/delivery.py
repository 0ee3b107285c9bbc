"""Copy a provider's output video into S3: streamed, size-capped, allow-listed, verified.

The output URL comes from the provider's answer, so it is untrusted input:

- Only https, to a host on the allow-list, that resolves only to public addresses. Local mode
  (``allow_loopback_http``) also allows loopback addresses, and plain http to ``localhost`` or a
  loopback IP. Any text before ``@`` in the host part is refused outright.
- Redirects are followed by hand, at most ``MAX_REDIRECTS``, and every hop is checked like the first.
- Content-Length is required unless the body is chunked: chunked framing still shows a cut-off
  body, while a body that simply ends when the connection closes does not. A declared length over
  the cap is refused before any byte is read; bytes are also counted as they arrive.
- The body goes straight into an S3 multipart upload (boto3's managed transfer reading a
  non-seekable stream), with a few parts in memory at a time. A problem found while reading
  raises inside the transfer, which aborts the upload: no object and no parts are left behind.
- The MP4 ``ftyp`` signature is checked in the first bytes while streaming; the stored size is
  checked with HeadObject, and a mismatched object is deleted.

Not covered: the address check resolves the name before requests resolves it again. Only the
allow-listed provider's own DNS could hand out a different address in between.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.util import parse_url

from s2v.model.errors import DeliveryError

MB = 1024 * 1024
MAX_REDIRECTS = 3
MIN_PART_BYTES = 5 * MB  # S3 rejects smaller parts (all but the last)
MAX_PARTS = 10_000  # S3's limit per multipart upload
# Parts uploaded at once, and the parts allowed in memory. 2 × 5 MiB keeps a 1 GiB copy's peak RSS
# within 1.2× of a 10 MB copy's at no loss of throughput (bench/, figures 1-2; 4 × 8 MiB was 1.6×).
UPLOAD_THREADS = 2
READ_BYTES = 256 * 1024  # one socket read; parts are assembled from these
MAX_URL_CHARS = 8192
STORED_CONTENT_TYPE = "video/mp4"
HOSTS_SETTING = "S2V_OUTPUT_ALLOWED_HOSTS"
SIZE_SETTING = "S2V_MAX_OUTPUT_BYTES"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_STATUSES = frozenset({408, 425, 429})  # and every 5xx

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]


@dataclass(frozen=True)
class DeliveryPolicy:
    allowed_hosts: tuple[str, ...]  # exact host names or "*.example.com" wildcards
    max_bytes: int
    allow_loopback_http: bool = False  # local mode
    allowed_content_types: tuple[str, ...] = ("video/mp4", "application/octet-stream", "binary/octet-stream")
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # longest silence while reading, not a total deadline
    chunk_size: int = MIN_PART_BYTES  # one multipart part

    def __post_init__(self) -> None:
        for pattern in self.allowed_hosts:
            if not _is_host_pattern(pattern):
                raise ValueError(f"{HOSTS_SETTING}: {pattern!r} is not a host name or a '*.domain.tld' wildcard")
        if self.max_bytes <= 0:
            raise ValueError(f"{SIZE_SETTING} must be positive")
        if self.chunk_size < MIN_PART_BYTES:
            raise ValueError(f"chunk_size must be at least {MIN_PART_BYTES} bytes (S3's smallest part)")
        if self.max_bytes > self.chunk_size * MAX_PARTS:
            raise ValueError(f"{SIZE_SETTING} needs more than {MAX_PARTS} parts of {self.chunk_size} bytes")


@dataclass(frozen=True)
class DeliveredObject:
    bucket: str
    key: str
    size: int
    etag: str
    content_type: str


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lower case, no trailing dot, no IPv6 brackets
    port: int


def check_url(url: str, policy: DeliveryPolicy, *, resolve: Resolver = socket.getaddrinfo) -> None:
    """Refuse, with a DeliveryError, any URL the policy does not allow. Resolves the host name."""
    target = _parse(url)
    plain_http = target.scheme == "http"
    if plain_http and not (policy.allow_loopback_http and _names_loopback(target.host)):
        raise DeliveryError(f"output URL must use https, not http (host {target.host}); "
                            "plain http is allowed only to loopback in local mode")
    if not host_allowed(target.host, policy.allowed_hosts):
        raise DeliveryError(
            f"output URL host {target.host} is not on the allow-list {HOSTS_SETTING} "
            f"({', '.join(policy.allowed_hosts) or 'empty'})"
        )
    addresses = _addresses(target, resolve)
    for address in addresses:
        problem = _address_problem(address, allow_loopback=policy.allow_loopback_http)
        if problem:
            shown = address if _unwrap(address) == address else f"{address} = {_unwrap(address)}"
            raise DeliveryError(f"output URL host {target.host} resolves to a non-public address, {shown} "
                                f"({problem}); only public addresses are allowed")
    if plain_http and not all(_unwrap(a).is_loopback for a in addresses):
        raise DeliveryError(f"output URL must use https, not http: {target.host} does not resolve to loopback only")


def host_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """Exact match, or ``*.domain`` matching any name that ends in ``.domain`` (not ``domain`` itself)."""
    host = host.lower().removesuffix(".")
    for pattern in allowed_hosts:
        pattern = pattern.strip().lower().removesuffix(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def copy_url_to_s3(
    url: str,
    *,
    s3_client: Any,
    bucket: str,
    key: str,
    policy: DeliveryPolicy,
    metadata: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
) -> DeliveredObject:
    """Stream ``url`` into ``s3://bucket/key``. A failed copy leaves no new object and no upload parts."""
    http = session or _new_session()
    try:
        response = _open(url, policy, http)
        with response:
            expected = _check_response(response, policy)
            body = CheckedBody(response.iter_content(READ_BYTES), expected=expected, policy=policy,
                               host=_host_of(response.url))
            _upload(body, s3_client, bucket, key, policy, metadata, tags)
    finally:
        if session is None:
            http.close()
    return _verify_stored(s3_client, bucket, key, body.bytes_read)


class CheckedBody:
    """The response body as a read-only, non-seekable file for boto3's managed upload.

    Checks happen as bytes arrive: the running count against the cap, the first bytes against the
    MP4 signature, the final count against Content-Length. A failed check raises DeliveryError
    out of ``read``, which makes the transfer abort its multipart upload.
    """

    def __init__(self, pieces: Iterator[bytes], *, expected: int | None, policy: DeliveryPolicy,
                 host: str) -> None:
        self._pieces = pieces
        self._expected = expected
        self._policy = policy
        self._host = host
        self._pending = b""
        self._head = b""
        self._ended = False
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        """Exactly ``size`` bytes unless the body ends first (S3 parts before the last must be full)."""
        wanted = float("inf") if size is None or size < 0 else size
        parts: list[bytes] = []
        have = 0
        while have < wanted:
            piece = self._pending or self._next_piece()
            self._pending = b""
            if not piece:
                break
            if have + len(piece) > wanted:
                cut = int(wanted - have)
                piece, self._pending = piece[:cut], piece[cut:]
            parts.append(piece)
            have += len(piece)
        return b"".join(parts)

    def _next_piece(self) -> bytes:
        if self._ended:
            return b""
        try:
            piece = next(self._pieces, b"")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._interrupted(exc) from exc
        if not piece:
            self._ended = True
            self._check_complete()
            return b""
        self.bytes_read += len(piece)
        if self.bytes_read > self._policy.max_bytes:
            raise DeliveryError(
                f"the output from {self._host} is larger than the cap of {_size(self._policy.max_bytes)} "
                f"({SIZE_SETTING}); download stopped at {_size(self.bytes_read)}"
            )
        if len(self._head) < 8:
            self._head += piece[: 8 - len(self._head)]
            if len(self._head) == 8:
                self._check_signature()
        return piece

    def _check_signature(self) -> None:
        if self._head[4:8] != b"ftyp":
            raise DeliveryError(f"the output from {self._host} is not an MP4 video (no 'ftyp' box at the start)")

    def _check_complete(self) -> None:
        if self._expected is not None and self.bytes_read < self._expected:
            raise DeliveryError(
                f"download stopped after {_size(self.bytes_read)} of {_size(self._expected)}: "
                "the provider connection was interrupted",
                retryable=True,
            )
        if len(self._head) < 8:
            raise DeliveryError(f"the output from {self._host} is not an MP4 video ({self.bytes_read} bytes)")

    def _interrupted(self, exc: BaseException) -> DeliveryError:
        of = f" of {_size(self._expected)}" if self._expected is not None else ""
        cause = (f"the provider sent nothing for {self._policy.read_timeout:g} s" if _is_timeout(exc)
                 else "the provider connection was interrupted")
        return DeliveryError(f"download stopped after {_size(self.bytes_read)}{of}: {cause}", retryable=True)


def _new_session() -> requests.Session:
    session = requests.Session()
    # No proxy or .netrc from the environment: the host we checked is the one we talk to, without credentials.
    session.trust_env = False
    return session


def _open(url: str, policy: DeliveryPolicy, http: requests.Session) -> requests.Response:
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        try:
            check_url(current, policy)
        except DeliveryError as exc:
            if hop == 0:
                raise
            raise DeliveryError(f"the output URL redirected to a refused address: {exc.reason}",
                                retryable=exc.retryable) from exc
        response = _get(http, current, policy)
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            return response
        response.close()
        current = urljoin(current, location)
    raise DeliveryError(f"the output URL redirected more than {MAX_REDIRECTS} times (last to {_host_of(current)})")


def _get(http: requests.Session, url: str, policy: DeliveryPolicy) -> requests.Response:
    host = _host_of(url)
    try:
        return http.get(url, stream=True, allow_redirects=False, headers={"Accept-Encoding": "identity"},
                        timeout=(policy.connect_timeout, policy.read_timeout))
    except requests.Timeout as exc:
        raise DeliveryError(f"{host} did not answer the download request in time", retryable=True) from exc
    except requests.RequestException as exc:
        # The exception text carries the full URL (a signed one, often): name the type only.
        raise DeliveryError(f"could not connect to {host} to download the output ({type(exc).__name__})",
                            retryable=True) from exc


def _check_response(response: requests.Response, policy: DeliveryPolicy) -> int | None:
    """Refuse a response before reading its body; return the declared length, if any."""
    host = _host_of(response.url)
    status = response.status_code
    if status in (404, 410):
        raise DeliveryError(f"the output URL has expired or no longer exists (HTTP {status} from {host}); "
                            "fetch a fresh result from the provider")
    if status in (401, 403):
        raise DeliveryError(f"{host} refused the download (HTTP {status}); a signed output URL may have expired")
    if status in RETRYABLE_STATUSES or status >= 500:
        raise DeliveryError(f"{host} answered HTTP {status} to the download; a later retry may work", retryable=True)
    if status != 200:
        raise DeliveryError(f"{host} answered HTTP {status} to the download instead of the video")

    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DeliveryError(f"{host} sent the output {encoding}-encoded; only an unencoded video can be stored")

    # RFC 9110: a missing type may be treated as application/octet-stream.
    media_type = response.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip().lower()
    allowed_types = tuple(t.lower() for t in policy.allowed_content_types)
    if media_type not in allowed_types:
        raise DeliveryError(f"the output from {host} has content type {media_type or '(empty)'}, "
                            f"not a video ({', '.join(allowed_types)})")

    declared = response.headers.get("Content-Length")
    if declared is None:
        if "chunked" not in response.headers.get("Transfer-Encoding", "").lower():
            raise DeliveryError(f"{host} sent the output without Content-Length or chunked framing, "
                                "so a cut-off download could not be told from a complete one")
        return None
    if not (declared.strip().isascii() and declared.strip().isdigit()):
        raise DeliveryError(f"{host} sent an invalid Content-Length ({declared!r})")
    expected = int(declared)
    if expected > policy.max_bytes:
        raise DeliveryError(f"the output is {_size(expected)}, over the cap of {_size(policy.max_bytes)} "
                            f"({SIZE_SETTING}); nothing was downloaded")
    return expected


def _upload(body: CheckedBody, s3_client: Any, bucket: str, key: str, policy: DeliveryPolicy,
            metadata: Mapping[str, str] | None, tags: Mapping[str, str] | None) -> None:
    extra: dict[str, Any] = {"ContentType": STORED_CONTENT_TYPE}
    if metadata:
        extra["Metadata"] = dict(metadata)
    if tags:
        extra["Tagging"] = urlencode(dict(tags))
    try:
        s3_client.upload_fileobj(body, bucket, key, ExtraArgs=extra, Config=_transfer_config(policy))
    except DeliveryError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise DeliveryError(f"writing s3://{bucket}/{key} failed: {exc}", retryable=_s3_retryable(exc)) from exc


def _transfer_config(policy: DeliveryPolicy) -> TransferConfig:
    config = TransferConfig(multipart_threshold=policy.chunk_size, multipart_chunksize=policy.chunk_size,
                            max_concurrency=UPLOAD_THREADS, use_threads=True, preferred_transfer_client="classic")
    # s3transfer's default lets 10 parts wait in memory; memory is what the Lambda pays for.
    config.max_in_memory_upload_chunks = UPLOAD_THREADS
    return config


def _s3_retryable(exc: ClientError | BotoCoreError) -> bool:
    if not isinstance(exc, ClientError):  # no answer from S3: connection or timeout
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status >= 500 or exc.response.get("Error", {}).get("Code") in ("SlowDown", "RequestTimeout", "Throttling")


def _verify_stored(s3_client: Any, bucket: str, key: str, streamed: int) -> DeliveredObject:
    try:
        head = s3_client.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise DeliveryError(f"s3://{bucket}/{key} was written but could not be verified: {exc}",
                            retryable=True) from exc
    stored = int(head["ContentLength"])
    if stored != streamed:
        s3_client.delete_object(Bucket=bucket, Key=key)
        raise DeliveryError(f"s3://{bucket}/{key} held {stored} bytes after copying {streamed}; "
                            "the object was removed", retryable=True)
    return DeliveredObject(bucket=bucket, key=key, size=stored, etag=head["ETag"].strip('"'),
                           content_type=head.get("ContentType", STORED_CONTENT_TYPE))


def _parse(url: str) -> _Target:
    if not isinstance(url, str) or not url:
        raise DeliveryError("the provider returned no output URL")
    if len(url) > MAX_URL_CHARS or not url.isascii() or "\\" in url or any(c <= " " or c == "\x7f" for c in url):
        raise DeliveryError("output URL is malformed (too long, or with spaces, control characters, "
                            "backslashes or non-ASCII characters)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise DeliveryError("output URL is malformed") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise DeliveryError(f"output URL scheme {scheme or '(none)'} is not allowed; only https")
    if "@" in parts.netloc:
        raise DeliveryError("output URL carries credentials (text before '@' in its host part); refusing it")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
        other_parser_host = (parse_url(url).host or "").lower()
    except ValueError as exc:
        raise DeliveryError("output URL has an invalid host or port") from exc
    raw_host = parts.hostname or ""
    # requests connects to the host urllib3 parses; refuse URLs where the two parsers disagree.
    if not raw_host or other_parser_host.strip("[]") != raw_host:
        raise DeliveryError("output URL has an invalid or ambiguous host")
    host = raw_host.removesuffix(".")
    if not (_ip_literal(host) or all(_LABEL.match(label) for label in host.split("."))):
        raise DeliveryError(f"output URL host {raw_host!r} is not a valid host name")
    return _Target(scheme=scheme, host=host, port=port)


def _addresses(target: _Target, resolve: Resolver) -> list[IPAddress]:
    literal = _ip_literal(target.host)
    if literal is not None:
        return [literal]
    try:
        infos = resolve(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeliveryError(f"could not resolve output URL host {target.host} ({exc})", retryable=True) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise DeliveryError(f"output URL host {target.host} has no address", retryable=True)
    return addresses


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64): where the packets really go."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _address_problem(address: IPAddress, *, allow_loopback: bool) -> str | None:
    ip = _unwrap(address)
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local, where cloud metadata services live"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return "private"
    if not ip.is_global:
        return "not globally routable"
    return None


def _names_loopback(host: str) -> bool:
    literal = _ip_literal(host)
    return host == "localhost" if literal is None else _unwrap(literal).is_loopback


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_host_pattern(pattern: str) -> bool:
    name = pattern.strip().lower().removesuffix(".")
    if name.startswith("*."):
        name = name[2:]
        if "." not in name:  # "*.com" would allow a whole top-level domain
            return False
    return bool(name) and (_ip_literal(name) is not None or all(_LABEL.match(label) for label in name.split(".")))


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or "the provider"
    except ValueError:
        return "the provider"


def _is_timeout(exc: BaseException) -> bool:
    timeouts = (requests.Timeout, TimeoutError, urllib3.exceptions.TimeoutError)
    return isinstance(exc, timeouts) or any(isinstance(arg, timeouts) for arg in exc.args)


def _size(n: int) -> str:
    if n >= 10 * MB:
        return f"{n / MB:.0f} MB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"
