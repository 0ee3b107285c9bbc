"""An S3 upload under ``inputs/``, routed: a manifest starts a batch (``flows/batch.py``, which makes
its rows' jobs through ingest), any other input is paired by ``flows/ingest.py``. The one entry of
the ingest function, above both flows so neither needs the other's entry."""

from __future__ import annotations

from s2v.deps import Deps
from s2v.flows import batch, ingest
from s2v.flows.ingest import IngestResult, Upload
from s2v.model.pairing import parse_key

__all__ = ["IngestResult", "Upload", "on_upload"]


def on_upload(upload: Upload, deps: Deps) -> IngestResult:
    settings = deps.settings
    if upload.bucket != settings.bucket:
        return IngestResult("ignored", detail=f"bucket {upload.bucket} is not {settings.bucket}")
    ref = parse_key(upload.key, settings.input_prefix)
    if ref is None:
        return IngestResult("ignored", detail=f"{upload.key} is not an input")
    if ref.kind == "manifest":
        return batch.on_manifest(upload.key, deps)
    return ingest.on_input(ref, deps)
