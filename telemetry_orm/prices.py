"""List prices of the models, to turn token counts into US dollars.

Used by the factories (and so the demo) and by the benchmarks; plain data, no dependency.
"""

from __future__ import annotations

from typing import Dict, Tuple

#: US dollars per million tokens: input, output, cache read, cache write.
PRICES: Dict[str, Tuple[float, float, float, float]] = {
    "claude-sonnet-4-5": (3.0, 15.0, 0.30, 3.75),
    "claude-opus-4-1": (15.0, 75.0, 1.50, 18.75),
    "claude-haiku-4-5": (1.0, 5.0, 0.10, 1.25),
    "claude-sonnet-4": (3.0, 15.0, 0.30, 3.75),
}


def cost_of(model: str, input_tokens: int, output_tokens: int,
            cache_read_tokens: int, cache_creation_tokens: int) -> float:
    """List price of a run in US dollars (unknown models priced as Sonnet)."""
    price_in, price_out, price_read, price_write = PRICES.get(model, PRICES["claude-sonnet-4-5"])
    total = (
        input_tokens * price_in
        + output_tokens * price_out
        + cache_read_tokens * price_read
        + cache_creation_tokens * price_write
    ) / 1_000_000
    return round(total, 6)
