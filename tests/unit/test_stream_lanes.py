"""The local stream reader spreads records over lanes as Lambda's ParallelizationFactor does."""

from __future__ import annotations

from typing import Any

from s2v_local.stack import partition_lanes


def record(job_id: str, seq: int) -> dict[str, Any]:
    return {"dynamodb": {"Keys": {"job_id": {"S": job_id}}, "SequenceNumber": str(seq)}}


def test_one_items_changes_stay_in_one_lane_in_order_and_items_spread_over_lanes() -> None:
    records = [record(f"job-{i % 20}", seq) for seq, i in enumerate(range(60))]
    lanes = partition_lanes(records, 10)
    assert 1 < len(lanes) <= 10
    assert sum(len(lane) for lane in lanes) == 60
    for lane in lanes:
        by_job: dict[str, list[int]] = {}
        for r in lane:
            by_job.setdefault(r["dynamodb"]["Keys"]["job_id"]["S"], []).append(int(r["dynamodb"]["SequenceNumber"]))
        for sequence in by_job.values():
            assert sequence == sorted(sequence)
    lanes_of: dict[str, set[int]] = {}
    for i, lane in enumerate(lanes):
        for r in lane:
            lanes_of.setdefault(r["dynamodb"]["Keys"]["job_id"]["S"], set()).add(i)
    assert len(lanes_of) == 20 and all(len(found) == 1 for found in lanes_of.values())


def test_a_factor_of_one_keeps_the_shard_order() -> None:
    records = [record(f"job-{i}", i) for i in range(7)]
    assert partition_lanes(records, 1) == [records]
    assert partition_lanes([], 4) == [[]]
