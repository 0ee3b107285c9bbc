"""What goes wrong: the faults a test injects, all off by default."""

from __future__ import annotations

from dataclasses import dataclass

WEBHOOK_MODES = ("normal", "none", "twice", "late", "out_of_order")
LATE_WEBHOOK_SECONDS = 3.0
DEFAULT_FAIL_MESSAGE = "task execution failed (1403): the emulator was told to fail this render"


@dataclass
class Faults:
    """What goes wrong, all off by default. Replace ``emulator.faults`` at any time. Counters
    (``submit_429`` …) count down per request; ``fail_renders``, ``fail_message``, ``nsfw`` and
    the webhook settings are taken when a task is submitted; the rest are read per request."""

    submit_429: int = 0  # the next N submits answer 429 with Retry-After
    result_429: int = 0
    result_500: int = 0
    submit_500_after_accept: int = 0  # the task is accepted, then the answer is a 500 (ambiguous)
    submit_delay_seconds: float = 0.0  # the task is accepted, then the answer comes this late
    result_delay_seconds: float = 0.0
    fail_renders: bool = False  # tasks end failed with fail_message (after fetching their inputs)
    fail_message: str = DEFAULT_FAIL_MESSAGE
    nsfw: bool = False  # outputs are flagged in has_nsfw_contents
    output_404: bool = False
    output_truncate_at: int | None = None  # serve this many bytes, with the full Content-Length
    # normal | none | twice (same webhook-id again) | late (signed at completion, sent
    # webhook_delay_seconds — default LATE_WEBHOOK_SECONDS — later) | out_of_order (a stale
    # "processing" callback after the final one)
    webhook_mode: str = "normal"
    webhook_delay_seconds: float = 0.0
    webhook_timestamp_skew_seconds: float = 0.0  # shifts the signed timestamp (negative: stale)
    retry_after_seconds: int = 1
    # List, delete and balance: the next N answer 500, or answer only after hang_seconds (longer
    # than a test client's timeout: it gives up, the server still does the work, as a real one may).
    list_429: int = 0
    list_500: int = 0
    list_timeout: int = 0
    delete_500: int = 0
    delete_timeout: int = 0
    balance_500: int = 0
    balance_timeout: int = 0
    hang_seconds: float = 3.0

    def __post_init__(self) -> None:
        if self.webhook_mode not in WEBHOOK_MODES:
            raise ValueError(f"webhook_mode must be one of {', '.join(WEBHOOK_MODES)}, not {self.webhook_mode!r}")
