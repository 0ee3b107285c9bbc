"""Figure 6: what one job costs in AWS, as a fraction of the provider's $0.15 render (5 s at 480p).

Inputs, all from the burst just measured: the requests the handlers made to moto (by service and
operation), the requests Lambda's triggers made (the local router's), each function's measured
durations, the template's memory sizes and the job items' size. Prices are public on-demand
list prices (us-east-1, arm64) at the time of writing; edit PRICES when they change.

Deliberately pessimistic: local durations include GIL contention with moto and the emulator in
one process; DynamoDB writes are charged for the largest job item and once more for the index;
every transaction is taken to write three items. Network time the emulator does not have (the
provider's API and CDN) is added as an explicit allowance per function.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

RENDER_PRICE_USD = 0.15  # 5 s at 480p: the cheapest render a job can be
TARGET_FRACTION = 0.003

PRICES = {
    "lambda_gb_second_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "s3_tier1_request": 0.005 / 1000,  # PUT, COPY, POST, LIST (multipart parts included)
    "s3_tier2_request": 0.0004 / 1000,  # GET, HEAD and the rest; DELETE is free
    "dynamodb_write_unit": 0.625 / 1e6,  # on-demand
    "dynamodb_read_unit": 0.125 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "http_api_request": 1.00 / 1e6,
    "eventbridge_event": 1.00 / 1e6,
    "secrets_manager_call": 0.05 / 10_000,
    "logs_gb_ingested": 0.50,
}
S3_TIER1 = {"PutObject", "CopyObject", "PostObject", "ListObjects", "CreateMultipartUpload", "UploadPart",
            "CompleteMultipartUpload", "PutObjectTagging", "DeleteObjects"}
S3_FREE = {"DeleteObject", "AbortMultipartUpload"}
DDB_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}
DDB_READS = {"GetItem", "Query", "Scan"}
# Seconds per job the emulator answers in no time but the real provider does not.
NETWORK_ALLOWANCE_SECONDS = {"IngestFunction": 1.0, "WebhookFunction": 0.5, "DeliverFunction": 2.0}
LOG_BYTES_PER_JOB = 8 * 1024  # INFO-level JSON lines + Lambda's START/END/REPORT lines (assumed)
ITEMS_PER_TRANSACTION = 3  # job + in-flight guard + daily spend


def item_kb(jobs: list[dict[str, Any]]) -> float:
    """The largest job item in KB (its JSON, a fair stand-in for DynamoDB's size rules)."""
    return max(len(json.dumps(job, default=str).encode()) for job in jobs) / 1024


def report(result: dict[str, Any]) -> float:
    """Prints figure 6; returns the total USD per job."""
    pairs: int = result["pairs"]
    requests: Counter[tuple[str, str, str]] = result["requests"]
    durations: dict[str, list[float]] = result["durations"]
    template = result["template"]
    # DynamoDB's own size rule when the burst measured it (bench.pipeline.item_bytes); else the JSON.
    summary = result.get("summary") or {}
    size_kb = summary["item_bytes_max"] / 1024 if "item_bytes_max" in summary else item_kb(result["jobs"])
    lines: list[tuple[str, float, str]] = []

    def add(what: str, usd_per_job: float, how: str) -> None:
        lines.append((what, usd_per_job, how))

    app = Counter({(svc, op): n for (caller, svc, op), n in requests.items() if caller == "app"})
    router = Counter({(svc, op): n for (caller, svc, op), n in requests.items() if caller == "s2v-local-router"})

    for logical_id, runs in sorted(durations.items()):
        if not runs:
            continue  # scheduled runs are not here: they cost the same whatever the load (below)
        memory_gb = template.functions[logical_id].memory_size / 1024
        allowance = NETWORK_ALLOWANCE_SECONDS.get(logical_id, 0.0)
        seconds = sum(runs) / pairs + allowance
        usd = seconds * memory_gb * PRICES["lambda_gb_second_arm64"] + len(runs) / pairs * PRICES["lambda_request"]
        add(f"Lambda {logical_id}", usd, f"{len(runs) / pairs:.2f} invocations, {seconds:.2f} s x "
                                         f"{memory_gb * 1024:.0f} MB (incl. {allowance:g} s network)")

    s3_tier1 = sum(n for (svc, op), n in app.items() if svc == "s3" and op in S3_TIER1)
    s3_tier2 = sum(n for (svc, op), n in app.items() if svc == "s3" and op not in S3_TIER1 | S3_FREE)
    add("S3 requests", (s3_tier1 * PRICES["s3_tier1_request"] + s3_tier2 * PRICES["s3_tier2_request"]) / pairs,
        f"{s3_tier1 / pairs:.1f} PUT/LIST-class + {s3_tier2 / pairs:.1f} GET/HEAD-class (the provider's input "
        "fetches included)")

    write_units = math.ceil(size_kb) * 2  # the item, and again for the due-index
    writes = sum(n for (svc, op), n in app.items() if svc == "dynamodb" and op in DDB_WRITES)
    transactions = app[("dynamodb", "TransactWriteItems")]
    wru = (writes + transactions * ITEMS_PER_TRANSACTION * 2) * write_units
    reads = sum(n for (svc, op), n in app.items() if svc == "dynamodb" and op in DDB_READS)
    rru = reads * math.ceil(size_kb / 4)
    add("DynamoDB", (wru * PRICES["dynamodb_write_unit"] + rru * PRICES["dynamodb_read_unit"]) / pairs,
        f"{wru / pairs:.0f} write units ({writes / pairs:.1f} writes + {transactions / pairs:.1f} transactions, "
        f"items up to {size_kb:.1f} KB), {rru / pairs:.1f} read units; stream reads by Lambda are free")

    notifications = 2 * pairs  # S3 → SQS, one message per uploaded object
    esm = sum(n for (svc, _), n in router.items() if svc == "sqs")
    add("SQS", (notifications + esm) * PRICES["sqs_request"] / pairs,
        f"{notifications / pairs:.0f} S3 notifications + {esm / pairs:.2f} receives/deletes by the trigger")
    webhooks = len(durations.get("WebhookFunction", []))
    add("API Gateway (HTTP API)", webhooks * PRICES["http_api_request"] / pairs, f"{webhooks / pairs:.2f} webhooks")
    events = app[("events", "PutEvents")]
    add("EventBridge", events * PRICES["eventbridge_event"] / pairs, f"{events / pairs:.2f} events")
    secrets = sum(n for (svc, _), n in app.items() if svc == "secretsmanager")
    add("Secrets Manager", secrets * PRICES["secrets_manager_call"] / pairs,
        f"{secrets / pairs:.2f} calls (cached per container)")
    add("CloudWatch Logs", LOG_BYTES_PER_JOB / 1024**3 * PRICES["logs_gb_ingested"],
        f"{LOG_BYTES_PER_JOB // 1024} KB ingested (assumed)")

    total = sum(usd for _, usd, _ in lines)
    print(f"\n6. AWS cost per job (from the {pairs}-pair burst; public list prices, us-east-1, arm64)")
    for what, usd, how in lines:
        print(f"   {what:<28} ${usd:.7f}  {how}")
    print(f"   {'total':<28} ${total:.7f} = {total / RENDER_PRICE_USD:.3%} of the ${RENDER_PRICE_USD:.2f} render  "
          f"(target <= {TARGET_FRACTION:.1%})")
    poll_runs = result["scheduled_durations"].get("PollFunction") or [0.05]
    poll_memory_gb = template.functions["PollFunction"].memory_size / 1024
    per_month = 43_200 * (sum(poll_runs) / len(poll_runs) * poll_memory_gb * PRICES["lambda_gb_second_arm64"]
                          + PRICES["lambda_request"])
    print(f"   fixed, whatever the load: the poll schedule ~${per_month:.2f}/month (43,200 runs), "
          "3 secrets $1.20/month, 8 alarms $0.80/month, idle SQS long polling ~$0.26/month")
    return total
