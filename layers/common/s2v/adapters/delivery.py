"""Copy a provider's output video into S3: streamed, size-capped, allow-listed, verified.

The output URL comes from the provider's answer, so it is untrusted input:

- Only https, to a host on the allow-list, that resolves only to public addresses. Local mode
  (``allow_loopback_http``) also allows loopback addresses, and plain http to ``localhost`` or a
  loopback IP. Any text before ``@`` in the host part is refused outright.
- Redirects are followed by hand, at most ``MAX_REDIRECTS``, and every hop is checked like the first.
- Each hop connects to an address its check approved, never to a second DNS answer (no rebinding
  window); Host, TLS SNI and the certificate check still use the host name.
- A copy can have a deadline (a ``time.monotonic()`` value; the deliver handler derives it from
  the function's remaining time). At the deadline the connection is shut, so even a read blocked
  on a source that drips a byte every few seconds returns; the upload is aborted and the
  DeliveryError is retryable.
- Content-Length is required unless the body is chunked: chunked framing still shows a cut-off
  body, while a body that simply ends when the connection closes does not. A declared length over
  the cap is refused before any byte is read; bytes are also counted as they arrive.
- The body goes straight into an S3 multipart upload (boto3's managed transfer reading a
  non-seekable stream), with a few parts in memory at a time. A problem found while reading
  raises inside the transfer, which aborts the upload: no object and no parts are left behind.
- The MP4 ``ftyp`` signature is checked in the first bytes while streaming; the stored size is
  checked with HeadObject, and a mismatched object is deleted.

The HTTP exchange is one GET per hop over ``http.client``, on a socket this module opens (no
proxy or .netrc from the environment), so the address, the timeouts and the deadline are in one place.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import certifi
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
# Kept back from the function's remaining time: for the managed transfer to finish the part uploads
# in flight and abort the multipart upload, and for the failure to be reported.
STOP_MARGIN_SECONDS = 30.0
USER_AGENT = "s2v-delivery"
AGAIN = "a later attempt may work"

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
    read_timeout: float = 60.0  # longest silence while reading; copy_url_to_s3's ``deadline`` bounds the total
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


def check_url(url: str, policy: DeliveryPolicy, *, resolve: Resolver | None = None) -> list[IPAddress]:
    """Refuse, with a DeliveryError, any URL the policy does not allow. Resolves the host name
    (with ``resolve``, by default ``socket.getaddrinfo``) and returns the addresses it checked."""
    return _check(url, policy, resolve or socket.getaddrinfo)[1]


def deadline_after(remaining_ms: int) -> float:
    """The copy deadline for an invocation with ``remaining_ms`` left (Lambda's
    ``context.get_remaining_time_in_millis()``): ``STOP_MARGIN_SECONDS`` before the function would be
    stopped, as a ``time.monotonic()`` value."""
    return time.monotonic() + remaining_ms / 1000 - STOP_MARGIN_SECONDS


def _check(url: str, policy: DeliveryPolicy, resolve: Resolver) -> tuple[_Target, list[IPAddress]]:
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
    return target, addresses


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
    deadline: float | None = None,
    resolve: Resolver | None = None,
    ca_file: str | None = None,
) -> DeliveredObject:
    """Stream ``url`` into ``s3://bucket/key``. A failed copy leaves no new object and no upload parts.

    ``deadline``: a ``time.monotonic()`` value (see ``deadline_after``) past which the copy stops with
    a retryable DeliveryError. ``resolve``: the name resolver (``socket.getaddrinfo``). ``ca_file``:
    the certificate authorities to trust instead of certifi's bundle (tests).
    """
    clock = _Deadline(deadline)
    try:
        with _open(url, policy, clock, resolve or socket.getaddrinfo, ca_file) as download:
            expected = _check_response(download.response, download.host, policy)
            body = CheckedBody(download.pieces(), expected=expected, policy=policy, host=download.host,
                               expired=clock.expired)
            _upload(body, s3_client, bucket, key, policy, metadata, tags)
    finally:
        clock.stop()
    return _verify_stored(s3_client, bucket, key, body.bytes_read)


class CheckedBody:
    """The response body as a read-only, non-seekable file for boto3's managed upload.

    Checks happen as bytes arrive: the running count against the cap, the first bytes against the
    MP4 signature, the final count against Content-Length, and ``expired()`` (the copy's deadline)
    before each piece and after any piece that failed. A failed check raises DeliveryError out of
    ``read``, which makes the transfer abort its multipart upload.
    """

    def __init__(self, pieces: Iterator[bytes], *, expected: int | None, policy: DeliveryPolicy,
                 host: str, expired: Callable[[], bool] = lambda: False) -> None:
        self._pieces = pieces
        self._expected = expected
        self._policy = policy
        self._host = host
        self._expired = expired
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
        if self._expired():
            raise self._out_of_time()
        try:
            piece = next(self._pieces, b"")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # At the deadline the connection is shut under a blocked read: say why it ended.
            raise (self._out_of_time() if self._expired() else self._interrupted(exc)) from exc
        if not piece and self._expired():
            raise self._out_of_time()
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
        cause = (f"the provider sent nothing for {self._policy.read_timeout:g} s" if isinstance(exc, TimeoutError)
                 else "the provider connection was interrupted")
        return DeliveryError(f"download stopped after {self._progress()}: {cause}", retryable=True)

    def _out_of_time(self) -> DeliveryError:
        return DeliveryError(f"download stopped after {self._progress()}: the delivery deadline passed, the output "
                             f"from {self._host} came too slowly; {AGAIN}", retryable=True)

    def _progress(self) -> str:
        return _size(self.bytes_read) + (f" of {_size(self._expected)}" if self._expected is not None else "")


class _Deadline:
    """A copy's time limit. When it passes, the connection in use is shut down, so a read blocked on
    a slow source returns at once rather than when the source next sends something."""

    def __init__(self, at: float | None) -> None:
        self._at = at
        self._passed = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        if at is not None:
            self._timer = threading.Timer(max(0.0, at - time.monotonic()), self._expire)
            self._timer.daemon = True
            self._timer.start()

    def expired(self) -> bool:
        return self._passed or (self._at is not None and time.monotonic() >= self._at)

    def left(self, limit: float) -> float:
        """``limit`` seconds, or fewer if the deadline is nearer; DeliveryError if it has passed."""
        if self._at is None:
            return limit
        left = self._at - time.monotonic()
        if left <= 0:
            raise DeliveryError(f"the delivery deadline passed before the download began; {AGAIN}", retryable=True)
        return min(limit, left)

    def watch(self, sock: socket.socket | None) -> None:
        """The socket to shut at the deadline (None: the copy no longer reads from one)."""
        with self._lock:
            self._socket = sock
            if sock is not None and self._passed:
                _shut(sock)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.watch(None)

    def _expire(self) -> None:
        with self._lock:
            self._passed = True
            if self._socket is not None:
                _shut(self._socket)


def _shut(sock: socket.socket) -> None:
    # socket.socket's own shutdown, also for an SSLSocket: SSLSocket.shutdown would drop its TLS
    # state under a read another thread is blocked in. Shutting the socket wakes that read.
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Download:
    """One GET's response, on a connection to an address the policy approved."""

    def __init__(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 host: str, clock: _Deadline) -> None:
        self.connection = connection
        self.response = response
        self.host = host
        self._clock = clock

    def pieces(self) -> Iterator[bytes]:
        while piece := self.response.read(READ_BYTES):
            yield piece

    def close(self) -> None:
        self._clock.watch(None)
        self.response.close()
        self.connection.close()

    def __enter__(self) -> _Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(url: str, policy: DeliveryPolicy, clock: _Deadline, resolve: Resolver, ca_file: str | None) -> _Download:
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        try:
            target, addresses = _check(current, policy, resolve)
        except DeliveryError as exc:
            if hop == 0:
                raise
            raise DeliveryError(f"the output URL redirected to a refused address: {exc.reason}",
                                retryable=exc.retryable) from exc
        download = _get(current, target, addresses, policy, clock, ca_file)
        location = download.response.getheader("Location")
        if download.response.status not in REDIRECT_STATUSES or not location:
            return download
        download.close()
        current = urljoin(current, location)
    raise DeliveryError(f"the output URL redirected more than {MAX_REDIRECTS} times (last to {_host_of(current)})")


def _get(url: str, target: _Target, addresses: Sequence[IPAddress], policy: DeliveryPolicy, clock: _Deadline,
         ca_file: str | None) -> _Download:
    """GET ``url`` from one of ``addresses`` (the checked ones, in order), never from a fresh DNS answer."""
    sock = _connect(target, addresses, policy, clock)
    connection = http.client.HTTPConnection(target.host, target.port)
    try:
        clock.watch(sock)
        if target.scheme == "https":
            sock = _tls(sock, target, clock, ca_file)
        connection.sock = sock  # http.client sends on it instead of opening a connection of its own
        parts = urlsplit(url)
        default_port = 443 if target.scheme == "https" else 80
        name = f"[{target.host}]" if ":" in target.host else target.host
        connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers={
            "Host": name if target.port == default_port else f"{name}:{target.port}",
            "Accept-Encoding": "identity", "User-Agent": USER_AGENT,
        })
        return _Download(connection, connection.getresponse(), target.host, clock)
    except DeliveryError:
        connection.close()
        sock.close()
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        connection.close()
        sock.close()
        if clock.expired():
            raise DeliveryError(f"{target.host} did not answer the download request before the delivery deadline; "
                                f"{AGAIN}", retryable=True) from exc
        if isinstance(exc, TimeoutError):
            raise DeliveryError(f"{target.host} did not answer the download request in time", retryable=True) from exc
        # Name the type only: an exception's text may carry the full, often signed, URL.
        raise DeliveryError(f"could not download the output from {target.host} ({type(exc).__name__})",
                            retryable=True) from exc


def _connect(target: _Target, addresses: Sequence[IPAddress], policy: DeliveryPolicy,
             clock: _Deadline) -> socket.socket:
    failure: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((str(address), target.port), timeout=clock.left(policy.connect_timeout))
        except OSError as exc:
            failure = exc
            continue
        sock.settimeout(policy.read_timeout)  # per read; the deadline bounds the whole copy
        return sock
    assert failure is not None  # _check returns at least one address
    if clock.expired():
        raise DeliveryError(f"could not connect to {target.host} before the delivery deadline; {AGAIN}",
                            retryable=True) from failure
    raise DeliveryError(f"could not connect to {target.host} to download the output ({type(failure).__name__})",
                        retryable=True) from failure


def _tls(sock: socket.socket, target: _Target, clock: _Deadline, ca_file: str | None) -> ssl.SSLSocket:
    """TLS to the address we connected to, for the name we checked: SNI and the certificate use the name."""
    context = _tls_context(ca_file or certifi.where())
    tls = context.wrap_socket(sock, server_hostname=target.host, do_handshake_on_connect=False)
    clock.watch(tls)
    try:
        tls.do_handshake()
    except BaseException as exc:
        tls.close()
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise DeliveryError(f"the certificate of {target.host} could not be verified ({exc.verify_message})",
                                retryable=True) from exc
        raise
    return tls


@functools.lru_cache(maxsize=4)
def _tls_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)  # verifies the certificate and its host name


def _check_response(response: http.client.HTTPResponse, host: str, policy: DeliveryPolicy) -> int | None:
    """Refuse a response before reading its body; return the declared length, if any."""
    status = response.status
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
    # A URL that urllib3's parser reads differently from urlsplit is a trick, not an output: refuse it.
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


def _size(n: int) -> str:
    if n >= 10 * MB:
        return f"{n / MB:.0f} MB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"
