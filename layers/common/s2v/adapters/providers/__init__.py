"""Video providers behind one small interface. WaveSpeed (``s2v.adapters.providers.wavespeed``) is the first.

The core talks to a provider only through ``Provider``: submit once, read the result, upload
media, fetch the webhook signing secret, and for reconciliation, cancel and the spend guard: list
recent tasks, delete one, read the balance. Another provider implements the same calls and returns
the same ``Prediction``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from s2v.adapters.providers.wavespeed import Prediction, PredictionPage, SubmitRequest


class Provider(Protocol):
    def submit(self, req: SubmitRequest, *, webhook_url: str | None = None) -> Prediction: ...

    def result(self, prediction_id: str) -> Prediction: ...

    def upload_media(self, data: bytes | BinaryIO, filename: str, content_type: str) -> str: ...

    def webhook_secret(self) -> str: ...

    def list_predictions(self, *, page: int = 1, page_size: int = 100, model: str | None = None,
                         created_after: datetime | str | None = None,
                         created_before: datetime | str | None = None) -> PredictionPage: ...

    def delete_prediction(self, prediction_id: str) -> Prediction: ...

    def balance(self) -> float: ...
