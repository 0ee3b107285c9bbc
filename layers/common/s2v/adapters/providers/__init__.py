"""Video providers behind one small interface. WaveSpeed (``s2v.adapters.providers.wavespeed``) is the first.

The core talks to a provider only through ``Provider``: submit once, read the result, upload
media, fetch the webhook signing secret. Another provider implements the same four calls and
returns the same ``Prediction``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from s2v.adapters.providers.wavespeed import Prediction, SubmitRequest


class Provider(Protocol):
    def submit(self, req: SubmitRequest, *, webhook_url: str | None = None) -> Prediction: ...

    def result(self, prediction_id: str) -> Prediction: ...

    def upload_media(self, data: bytes | BinaryIO, filename: str, content_type: str) -> str: ...

    def webhook_secret(self) -> str: ...
