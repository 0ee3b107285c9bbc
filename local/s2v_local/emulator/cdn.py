"""The CDN origin: outputs from another server and host name, at the CDN's path; what S3 behind
CloudFront answers once they expire; broken downloads on demand."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from s2v.model import provider_facts
from s2v_local.emulator.core import EmulatorCore
from s2v_local.emulator.wsgi import file_response

ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message></Error>")


class Cdn(EmulatorCore):
    def _on_output(self, request: Request, task_id: str) -> Response:
        faults = self.faults
        if faults.output_404:
            return Response("not found", status=404)
        path = self.output_path(task_id)
        completed = self._completed.get(task_id)
        if (completed is None or self.clock() - completed > provider_facts.RETENTION_SECONDS
                or not path.is_file()):
            # What S3 behind CloudFront answers for a key that is gone (or never was).
            return Response(ACCESS_DENIED, status=403, mimetype="application/xml")
        truncate_at = faults.output_truncate_at
        if truncate_at is None or truncate_at >= path.stat().st_size:
            return file_response(request, path, "video/mp4")
        # A download that breaks mid-stream: the full Content-Length, then the connection closes.
        size = path.stat().st_size
        with path.open("rb") as source:
            head = source.read(truncate_at)
        return Response(iter([head]), status=200, headers={"Content-Type": "video/mp4", "Content-Length": str(size)},
                        direct_passthrough=True)
