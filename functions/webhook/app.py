"""POST /webhook/{job_id}?token=… from WaveSpeed → s2v.flows.webhook (verify, confirm, update)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from s2v.config import Settings
from s2v.deps import Deps
from s2v.flows.webhook import handle_callback
from s2v.tracing import LazyTracer

logger = Logger()
tracer = LazyTracer()  # X-Ray only when the Tracing parameter is Active
metrics = Metrics()
app = APIGatewayHttpResolver()
deps = Deps(Settings.from_env())


@app.post("/webhook/<job_id>")
@tracer.capture_method
def provider_callback(job_id: str) -> Response:
    event = app.current_event
    result = handle_callback(
        job_id=job_id,
        token=(event.query_string_parameters or {}).get("token", ""),
        headers=event.headers or {},
        body=raw_body(event.body, is_base64=bool(event.is_base64_encoded)),
        deps=deps,
    )
    logger.info("webhook", extra={"job_id": job_id, "status_code": result.status_code})
    if result.bad_signature:  # a rotated secret, or a forger holding a token: either is worth an alarm
        metrics.add_metric(name="WebhookSignatureFailures", unit=MetricUnit.Count, value=1)
    return Response(status_code=result.status_code, content_type="application/json",
                    body={"message": result.message})


def raw_body(body: str | None, *, is_base64: bool) -> bytes | None:
    """The bytes the provider signed; None when a base64 body is not base64 (the flow refuses it
    after checking the token). Never decoded as text here: the signature is over bytes."""
    if not is_base64:
        return (body or "").encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(body or "", validate=True)
    except (binascii.Error, ValueError):
        return None


@logger.inject_lambda_context(correlation_id_path="pathParameters.job_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
