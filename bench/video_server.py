"""A local stand-in for the provider's CDN: GET /<bytes>.mp4 streams that many bytes of MP4-looking data.

Run in its own process (``python -m bench.video_server``; it prints its port), so serving bytes
does not compete for a GIL with moto's server or with the copy being measured.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
BLOCK = bytes(range(256)) * 4096  # 1 MiB


class VideoHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        size = int(self.path.strip("/").split(".")[0])
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(HEAD)
        left = size - len(HEAD)
        while left > 0:
            n = min(left, len(BLOCK))
            self.wfile.write(BLOCK[:n])
            left -= n


def video_bytes(size: int) -> bytes:
    """The bytes ``GET /<size>.mp4`` serves."""
    body = HEAD + BLOCK * (size // len(BLOCK) + 1)
    return body[:size]


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), VideoHandler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)
