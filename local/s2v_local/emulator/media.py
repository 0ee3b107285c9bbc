"""Media uploads: the binary upload and the SDK's ticket (PUT the bytes, then download them)."""

from __future__ import annotations

import mimetypes
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from werkzeug.wrappers import Request, Response

from s2v.model import provider_facts
from s2v_local.emulator.core import EmulatorCore
from s2v_local.emulator.wsgi import envelope, file_response, safe_name


@dataclass
class Upload:
    path: Path
    content_type: str
    complete: bool = False


class Media(EmulatorCore):
    _uploads: dict[str, Upload]

    @property
    def _media_dir(self) -> Path:
        assert self._workdir is not None, "the emulator is not running"
        return self._workdir / "media"

    def _on_upload_binary(self, request: Request) -> Response:
        if denied := self._authorized(request):
            return denied
        upload = request.files.get("file")
        if upload is None:
            return envelope(400, "file is required (multipart/form-data field 'file')")
        token, name = uuid.uuid4().hex, safe_name(upload.filename)
        path = self._media_dir / token
        upload.save(path)
        content_type = upload.mimetype or "application/octet-stream"
        with self._lock:
            self._uploads[token] = Upload(path, content_type, complete=True)
        return envelope(200, "success", {"type": media_type(content_type, name),
                                          "download_url": f"{self.base_url}/media/{token}/{name}",
                                          "filename": name, "size": path.stat().st_size})

    def _on_upload_ticket(self, request: Request) -> Response:
        # The SDK's upload: ask for a ticket, PUT the bytes to its URL, use its download_url.
        if denied := self._authorized(request):
            return denied
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("filename"), str) or not body["filename"]:
            return envelope(400, "filename is required")
        token, name = uuid.uuid4().hex, safe_name(body["filename"])
        content_type = body.get("content_type") if isinstance(body.get("content_type"), str) else None
        with self._lock:
            self._uploads[token] = Upload(self._media_dir / token, content_type or "application/octet-stream")
        return envelope(200, "success", {
            "type": media_type(content_type or "", name),
            "upload": {"method": "PUT", "url": f"{self.base_url}/uploads/{token}",
                       "headers": {"Content-Type": content_type} if content_type else {}},
            "download_url": f"{self.base_url}/media/{token}/{name}",
        })

    def _on_upload_put(self, request: Request, token: str) -> Response:
        upload = self._uploads.get(token)
        if upload is None or upload.complete:
            return Response("unknown or used upload URL", status=404)
        with upload.path.open("wb") as out:
            shutil.copyfileobj(request.stream, out)
        upload.complete = True
        return Response(status=200)

    def _on_media(self, request: Request, token: str, filename: str) -> Response:
        upload = self._uploads.get(token)
        if upload is None or not upload.complete:
            return Response("not found", status=404)
        return file_response(request, upload.path, upload.content_type)


def media_type(content_type: str, filename: str) -> str:
    """The upload answer's ``type``: image, video or audio (documented values), else "file"."""
    guessed = content_type if "/" in content_type and content_type != "application/octet-stream" else (
        mimetypes.guess_type(filename)[0] or "")
    kind = guessed.split("/", 1)[0]
    return kind if kind in provider_facts.UPLOAD_TYPES else "file"
