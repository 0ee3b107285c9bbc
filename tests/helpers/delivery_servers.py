"""Loopback servers (http or https) and tools for delivery tests, end-to-end runs and benchmarks.

``VideoServer`` serves MP4-looking bytes made on the fly (an ``ftyp`` box, then a pattern that
depends on the position), so a 300 MB video costs the server no memory. Each ``Output`` says how
to answer: cut the body short, lie about its length, send the wrong type, answer 404, redirect,
go silent, or drip. ``LocalCA`` signs certificates for an https ``VideoServer``.
``run_copy_in_child`` runs one copy in a fresh interpreter and reports its peak RSS.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
FTYP = struct.pack(">I4s4sI4s4s", 24, b"ftyp", b"isom", 0x200, b"isom", b"mp41")
PERIOD = 251  # prime: no part size is a multiple of it, so a shifted or swapped part shows
WRITE_BYTES = 256 * 1024
_TILE = bytes(range(PERIOD)) * (WRITE_BYTES // PERIOD + 2)


def video_bytes(start: int, length: int, *, mp4: bool = True) -> bytes:
    """Bytes ``[start, start + length)`` of the generated video."""
    offset = start % PERIOD
    if offset + length <= len(_TILE):
        data = _TILE[offset:offset + length]
    else:
        data = (bytes(range(PERIOD)) * ((offset + length) // PERIOD + 1))[offset:offset + length]
    if mp4 and start < len(FTYP):
        head = FTYP[start:start + length]
        data = head + data[len(head):]
    return data


def video_chunks(size: int, *, start: int = 0, mp4: bool = True) -> Iterator[bytes]:
    for position in range(start, size, WRITE_BYTES):
        yield video_bytes(position, min(WRITE_BYTES, size - position), mp4=mp4)


def video_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in video_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Output:
    """How the server answers one URL."""

    size: int = MB
    status: int = 200
    content_type: str = "video/mp4"  # "" sends no Content-Type
    framing: str = "length"  # "length" | "chunked" | "close" (no length: the body ends when the connection does)
    declared_size: int | None = None  # announce this Content-Length instead of the real size
    truncate_at: int | None = None  # drop the connection after this many body bytes
    stall_at: int | None = None  # go silent after this many body bytes...
    stall_seconds: float = 0.0  # ...for this long (cut short when the server stops)
    drip_at: int | None = None  # after this many body bytes, send the rest one byte at a time...
    drip_seconds: float = 0.0  # ...one every this many seconds: never silent long enough to time out
    redirect_to: str | None = None  # answer 302 with this Location
    mp4: bool = True  # False: the same pattern without the ftyp box
    headers: Mapping[str, str] = field(default_factory=dict)


class VideoServer:
    """``serve(Output(...))`` returns a URL; ``hits(url)`` counts the requests it received."""

    def __init__(self, *, address: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        """``address`` and ``port``: where to listen (127.0.0.2 is loopback too, on Linux); ``tls``: a
        server context (see ``LocalCA``) to serve https."""
        self._outputs: dict[str, Output] = {}
        self._hits: dict[str, int] = {}
        self.hosts: list[str] = []  # the Host header of every request, in order
        self.scheme = "http"
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self.stopping = threading.Event()
        self._server = _QuietServer((address, port), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_port
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> VideoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def serve(self, output: Output, *, host: str = "127.0.0.1", path: str | None = None) -> str:
        """Register ``output`` under ``path`` (a new one by default) and return its URL; ``host`` names
        this server in the URL ("localhost" gives a second host name for the same server)."""
        path = path or f"/outputs/{next(self._names)}.mp4"
        with self._lock:
            self._outputs[path] = output
        return f"{self.scheme}://{host}:{self.port}{path}"

    def hits(self, url: str) -> int:
        with self._lock:
            return self._hits.get(_path_of(url), 0)

    def _lookup(self, path: str, host: str) -> Output | None:
        with self._lock:
            self.hosts.append(host)
            self._hits[path] = self._hits.get(path, 0) + 1
            return self._outputs.get(path)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hanging up is part of the tests
            super().handle_error(request, client_address)


def _path_of(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]


def _handler_for(server: VideoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            output = server._lookup(self.path.split("?", 1)[0], self.headers.get("Host", ""))
            with suppress(BrokenPipeError, ConnectionResetError):
                if output is None:
                    self._reply(404, b"no such output")
                elif output.redirect_to:
                    self._reply(302, b"", {"Location": output.redirect_to})
                elif output.status != 200:
                    self._reply(output.status, b"<Error>expired</Error>", {"Content-Type": "application/xml"})
                else:
                    self._send_video(output)

        def _reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_video(self, output: Output) -> None:
            self.send_response(200)
            if output.content_type:
                self.send_header("Content-Type", output.content_type)
            if output.framing == "length":
                self.send_header("Content-Length", str(output.declared_size or output.size))
            elif output.framing == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            for name, value in output.headers.items():
                self.send_header(name, value)
            self.end_headers()

            sent = 0
            limit = output.size if output.truncate_at is None else min(output.size, output.truncate_at)
            stalled = False
            if output.drip_at is not None:
                self._drip(output, limit)
                return
            for chunk in video_chunks(limit, mp4=output.mp4):
                if output.stall_at is not None and not stalled and sent + len(chunk) > output.stall_at:
                    head = chunk[: output.stall_at - sent]
                    self._write(head, output.framing)
                    sent += len(head)
                    chunk = chunk[len(head):]
                    stalled = True
                    server.stopping.wait(output.stall_seconds)
                self._write(chunk, output.framing)
                sent += len(chunk)
            if output.truncate_at is not None and output.truncate_at < output.size:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif output.framing == "chunked":
                self.wfile.write(b"0\r\n\r\n")

        def _drip(self, output: Output, limit: int) -> None:
            assert output.drip_at is not None
            for chunk in video_chunks(min(output.drip_at, limit), mp4=output.mp4):
                self._write(chunk, output.framing)
            for position in range(output.drip_at, limit):
                if server.stopping.wait(output.drip_seconds):
                    return
                self._write(video_bytes(position, 1, mp4=output.mp4), output.framing)
                self.wfile.flush()
            if output.framing == "chunked":
                self.wfile.write(b"0\r\n\r\n")

        def _write(self, data: bytes, framing: str) -> None:
            if not data:
                return
            if framing == "chunked":
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)

    return Handler


class LocalCA:
    """A certificate authority made for one test, and server certificates it signs.

    ``ca_file`` is what a client trusts; ``server_context(name)`` is a TLS server context whose
    certificate is valid for ``name`` only. ``sni_names`` collects the names clients sent in SNI.
    """

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s2v test CA")])
        self._cert = (_certificate(name, name, self._key.public_key())
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.ca_file = str(directory / "ca.pem")
        Path(self.ca_file).write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self.sni_names: list[str | None] = []

    def server_context(self, name: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (_certificate(subject, self._cert.subject, key.public_key())
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .sign(self._key, hashes.SHA256()))
        cert_file, key_file = self._dir / f"{name}.pem", self._dir / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        context.sni_callback = lambda _socket, server_name, _context: self.sni_names.append(server_name)
        return context


def _certificate(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1)))


@dataclass(frozen=True)
class ChildCopy:
    """What one copy in a fresh interpreter used: RSS after imports and at its peak, in bytes."""

    baseline_rss: int
    peak_rss: int
    size: int
    etag: str


_CHILD_SCRIPT = r"""
import json, resource, sys
import boto3
from s2v.adapters.delivery import DeliveryPolicy, copy_url_to_s3

def peak_rss():
    # VmHWM belongs to this process image alone; ru_maxrss carries over the parent's peak through
    # fork and exec, so a test process holding moto's objects would inflate it.
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

args = json.loads(sys.argv[1])
s3 = boto3.client("s3", endpoint_url=args["endpoint"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
policy = DeliveryPolicy(**{k: tuple(v) if isinstance(v, list) else v for k, v in args["policy"].items()})
baseline = peak_rss()
delivered = copy_url_to_s3(args["url"], s3_client=s3, bucket=args["bucket"], key=args["key"], policy=policy)
print(json.dumps({"baseline_rss": baseline, "peak_rss": peak_rss(), "size": delivered.size, "etag": delivered.etag}))
"""


def run_copy_in_child(url: str, *, endpoint: str, bucket: str, key: str, policy: Any,
                      timeout: float = 300) -> ChildCopy:
    """Run ``copy_url_to_s3`` in a new interpreter (so its peak RSS is the copy's alone)."""
    args = {"url": url, "endpoint": endpoint, "bucket": bucket, "key": key, "policy": asdict(policy)}
    path = os.pathsep.join(filter(None, [str(ROOT / "layers" / "common"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("AWS_PROFILE", None)
    done = subprocess.run([sys.executable, "-c", _CHILD_SCRIPT, json.dumps(args)], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the copy in the child process failed:\n{done.stderr[-4000:]}")
    return ChildCopy(**json.loads(done.stdout.strip().splitlines()[-1]))
