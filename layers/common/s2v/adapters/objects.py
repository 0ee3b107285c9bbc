"""The S3 adapter for inputs and working files. It refuses to write under ``outputs/``: only
``s2v.flows.outputs`` writes there (the one owner of every delivered name)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from s2v.model.errors import InputError
from s2v.model.pairing import ListedObject

# What S3 answers for a key (or version) that is not there: a GET, a ranged GET or a HEAD.
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})


def _missing_input(key: str, exc: ClientError) -> InputError | None:
    """An input read after the job was recorded that is no longer there: the user's to fix, never retried."""
    if exc.response.get("Error", {}).get("Code") not in MISSING_CODES:
        return None
    return InputError(f"{key} is no longer in the bucket (deleted or renamed after the job was recorded); "
                      "nothing was rendered. Upload the files again to render them.", code="inputs_missing")


def input_changed(key: str) -> InputError:
    return InputError(f"{key} was replaced after this job was recorded, so it was not sent to the provider "
                      "(what was checked is what is rendered and billed); the new upload is a job of its own",
                      code="input_changed")


def _pinned(call: Callable[..., Any], key: str, **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            raise input_changed(key) from None
        raise _missing_input(key, exc) or exc from exc


class S3Reader:
    """A ranged reader over one S3 object (the ``s2v.model.media.ObjectReader`` protocol), pinned to
    one version: the first GET must match ``etag`` (the object the job was made for); the version it
    returns is read from then on (``version_id``, "" on a bucket without versioning, where each GET
    must match ``etag`` again). A replaced object is an ``input_changed`` InputError."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int, etag: str = "") -> None:
        self._s3, self._bucket = s3, bucket
        self.key, self.size, self.etag = key, size, etag
        self.version_id = ""
        self.bytes_read = 0
        self._metadata: dict[str, str] | None = None

    def _pin(self) -> dict[str, str]:
        if self.version_id:
            return {"VersionId": self.version_id}
        return {"IfMatch": f'"{self.etag}"'} if self.etag else {}

    def _seen(self, response: Mapping[str, Any]) -> None:
        self._metadata = dict(response.get("Metadata", {}))
        version = str(response.get("VersionId") or "")
        # "null": stored before versioning was on; overwriting it loses it, so it pins nothing.
        self.version_id = self.version_id or (version if version != "null" else "")

    @property
    def metadata(self) -> dict[str, str]:
        """The object's user metadata: every ranged GET carries it, so a HEAD only if nothing was read."""
        if self._metadata is None:
            self._seen(_pinned(self._s3.head_object, self.key, Bucket=self._bucket, Key=self.key, **self._pin()))
        return self._metadata or {}

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        if self.size == 0 or start >= self.size:
            return b""
        end = self.size - 1 if length is None else min(self.size - 1, start + length - 1)
        response = _pinned(self._s3.get_object, self.key, Bucket=self._bucket, Key=self.key,
                           Range=f"bytes={start}-{end}", **self._pin())
        self._seen(response)
        data = response["Body"].read()
        self.bytes_read += len(data)
        return data


class ObjectStore:
    def __init__(self, s3: Any, bucket: str, *, protected_prefix: str = "") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.protected_prefix = protected_prefix  # outputs/: written only through s2v.flows.outputs

    def _writable(self, key: str) -> str:
        if self.protected_prefix and key.startswith(self.protected_prefix):
            raise PermissionError(f"{key} is under {self.protected_prefix}: only s2v.flows.outputs writes there")
        return key

    def list_prefix(self, prefix: str) -> list[ListedObject]:
        found: list[ListedObject] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found.append(ListedObject(key=obj["Key"], etag=obj["ETag"].strip('"'), size=obj["Size"]))
        return found

    def read_small(self, key: str, limit: int) -> bytes:
        """Read at most ``limit`` bytes: a sidecar is tiny, and a huge one must not be pulled whole."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{limit}")["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # a zero-byte object has no byte 0
            raise
        return body.read()

    def read_small_if_exists(self, key: str, limit: int) -> bytes | None:
        """As ``read_small``; None when there is no such object. Only for keys the role may GET:
        S3 answers a GET of a missing key with 403 unless the caller may also list the bucket
        (unconditionally), so for such a key AccessDenied means "not there" (SSE-S3, no KMS)."""
        try:
            return self.read_small(key, limit)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound", "AccessDenied"):
                return None
            raise

    def reader(self, key: str, size: int, etag: str = "") -> S3Reader:
        return S3Reader(self.s3, self.bucket, key, size, etag)

    def presign_get(self, key: str, expires_in: int, version_id: str = "") -> str:
        """A GET anyone may use until it expires; naming ``version_id`` it reads that version even
        after the key was overwritten."""
        params = {"Bucket": self.bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        return self.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)

    def open_stream(self, key: str, *, version_id: str = "", etag: str = "") -> Any:
        """The object's bytes as a stream: that version, or (no version) only while it still has
        ``etag`` (an ``input_changed`` InputError otherwise)."""
        pin = {"VersionId": version_id} if version_id else {"IfMatch": f'"{etag}"'} if etag else {}
        return _pinned(self.s3.get_object, key, Bucket=self.bucket, Key=key, **pin)["Body"]

    def check_unchanged(self, key: str, etag: str) -> None:
        """Raise ``input_changed`` unless the object at ``key`` still has ``etag`` (a bucket without
        versioning, where a presigned GET cannot name the bytes that were checked)."""
        _pinned(self.s3.head_object, key, Bucket=self.bucket, Key=key, IfMatch=f'"{etag}"')


    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise


    # Files on local disk (the long-form function's /tmp): boto3's managed transfer, multipart in
    # parts of TRANSFER_PART_BYTES with a few threads, so memory stays bounded whatever the size. S3
    # completes a multipart upload atomically: a crash mid-upload leaves no object, only parts that
    # the bucket's lifecycle rule aborts.

    def download_file(self, key: str, path: str, version_id: str = "") -> None:
        extra = {"VersionId": version_id} if version_id else None
        self.s3.download_file(self.bucket, key, path, ExtraArgs=extra, Config=_transfer_config())

    def upload_file(self, path: str, key: str, *, content_type: str, metadata: dict[str, str] | None = None,
                    tags: dict[str, str] | None = None) -> None:
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": metadata or {}}
        if tags:
            extra["Tagging"] = urlencode(tags)
        self.s3.upload_file(path, self.bucket, self._writable(key), ExtraArgs=extra, Config=_transfer_config())


TRANSFER_PART_BYTES = 16 * 1024 * 1024
TRANSFER_THREADS = 4  # at most 4 parts (64 MiB) in memory at once


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=TRANSFER_PART_BYTES, multipart_chunksize=TRANSFER_PART_BYTES,
                          max_concurrency=TRANSFER_THREADS, use_threads=True)
