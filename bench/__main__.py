"""`make bench`: s2v's speed, memory and cost figures, each next to a baseline measured in the same run.

    python -m bench [delivery|latency|cold_start|burst|cost|dashboard|stitch|talks|documents|media ...] [--quick]
                    [--stitch-minutes N]
    python -m bench burst --against REV [--pairs 40,100] [--runs 3]   (figures 5 and 6 beside commit REV)

1-2 delivery memory and throughput, 3 completion-to-delivered latency, 4 handler cold start,
5 a burst of pairs on the local stack (5b: queued jobs taking freed slots),
6 the AWS cost of one job (from the burst's counts), 7 `s2v dashboard`'s pages at 10,000 jobs,
8 the long-form stitch (time per output minute and peak RSS for an hour of 720p vs a `-c copy` concat);
9 a 10-minute talk in 60 s segments, 4 in flight, against one call;
10 hostile documents through the bounded parser, and a busy job's bounded history;
11 the validation bound (hostile media at the size limits: CPU seconds and peak RSS of the inspection).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bench.common import PATHS

FIGURES = ("delivery", "latency", "cold_start", "burst", "cost", "dashboard", "stitch", "talks", "documents",
           "media")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", nargs="*", metavar="figure", help=f"any of {', '.join(FIGURES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer runs")
    parser.add_argument("--stitch-minutes", type=int, metavar="N",
                        help="length of the stitched talk (default 60; --quick: 4)")
    parser.add_argument("--against", metavar="REV",
                        help="burst/cost: run figures 5 and 6 side by side with commit REV (a git worktree), "
                             "alternating runs, and print the ratios")
    parser.add_argument("--pairs", default="40,100", help="with --against: burst sizes (default 40,100)")
    parser.add_argument("--runs", type=int, default=3, help="with --against: runs per side and size (default 3)")
    args = parser.parse_args()
    unknown = sorted(set(args.figures) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    chosen = args.figures or list(FIGURES)
    sys.path[:0] = [p for p in PATHS if p not in sys.path]
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING)

    from bench import cold_start, delivery, pipeline

    if "delivery" in chosen:
        delivery.run([10, 50] if args.quick else [10, 200, 1024], samples=1 if args.quick else 3)
    if "latency" in chosen:
        pipeline.latency(8 if args.quick else 20)
    if "cold_start" in chosen:
        cold_start.run(3 if args.quick else 7)
    if args.against and ("burst" in chosen or "cost" in chosen):
        from bench import side_by_side

        side_by_side.run(args.against, [int(n) for n in args.pairs.split(",")], runs=args.runs)
    elif "burst" in chosen or "cost" in chosen:
        from bench import cost

        result = pipeline.burst(100 if args.quick else 1000)
        if "burst" in chosen:
            pipeline.queue_release(10 if args.quick else 20)
        if "cost" in chosen:
            cost.report(result)
    if "dashboard" in chosen:
        from bench import dashboard

        dashboard.run(2_000 if args.quick else 10_000, runs=3 if args.quick else 5)
    if "stitch" in chosen:
        from bench import stitch

        # The join of an hour of 720p copies its video: the figure in every full run.
        default = 4 if args.quick else 60
        stitch.run(args.stitch_minutes or default)
    if "talks" in chosen:
        from bench import longform

        longform.run(pace=0.02 if args.quick else longform.PACE)
    if "documents" in chosen:
        from bench import documents

        documents.run()
    if "media" in chosen:
        from bench import media

        media.run(quick=args.quick)


if __name__ == "__main__":
    main()
