"""The batching defaults every batching server starts with: the original benchmark's
LitServe settings (up to 8 requests per forward pass, waiting at most 50 ms to fill one)."""

from __future__ import annotations

MAX_BATCH_SIZE = 8
BATCH_TIMEOUT_S = 0.05
ORIGINAL_BATCHING = {"max_batch_size": MAX_BATCH_SIZE, "batch_timeout": BATCH_TIMEOUT_S}


def add_batching_arguments(parser) -> None:
    """--max-batch-size and --batch-timeout, with the defaults above."""
    parser.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE)
    parser.add_argument(
        "--batch-timeout", type=float, default=BATCH_TIMEOUT_S, help="seconds (default %(default)s)"
    )
