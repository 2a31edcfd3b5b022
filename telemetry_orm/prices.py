"""What models cost: a price table, to turn token counts into US dollars.

The table shipped with the package (``telemetry_orm/data/prices.json``)
holds the providers' list prices per token for input, output, cache reads
and cache writes, with the source they were taken from and its date.
:func:`load_prices` reads a file of one's own, in that format or in
LiteLLM's (``model_prices_and_context_window.json``); its entries override
the shipped ones. ``$TELEMETRY_PRICES`` names such a file for every
command and for :func:`default_prices`.

A model without a price has none: :func:`cost_of` answers ``None``, never a
guess from a similar model. Names are matched as providers and logs spell
them (see :func:`model_key`).

One cache-write price per model: Anthropic's 5-minute cache write (1.25x
input). One-hour cache writes (2x input) and the long-context tier of some
models (above 200,000 input tokens) cost more; the schema keeps one
cache-write count and one input count per run, so those runs are priced
at the lower rates.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Union

from .checks import is_amount
from .errors import TelemetryValidationError

#: The ``format`` of this package's price files.
PRICE_FORMAT = "telemetry_orm.prices/1"

#: A price file overriding the shipped table, for every command.
ENV_PRICES = "TELEMETRY_PRICES"

_PER_MILLION = 1_000_000


@dataclasses.dataclass(frozen=True)
class Price:
    """USD per token of one model. ``cache_read`` and ``cache_write`` are
    ``None`` where the provider has no such price: those tokens are then
    priced as input (OpenAI counts cached tokens inside its input)."""

    input: float
    output: float
    cache_read: Optional[float] = None
    cache_write: Optional[float] = None
    provider: Optional[str] = None
    #: Where the figures come from, and as of when.
    source: str = ""
    as_of: str = ""

    def cost(self, input_tokens: int = 0, output_tokens: int = 0,
             cache_read_tokens: int = 0, cache_creation_tokens: int = 0) -> float:
        """The list price, in USD, of those tokens."""
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        total = (input_tokens * self.input + output_tokens * self.output
                 + cache_read_tokens * read + cache_creation_tokens * write)
        # Per-token prices are not exact in binary: 1e6 tokens at 3e-06 must
        # cost 3.0, not 2.9999999999999996.
        return round(total, 10)

    def per_million(self) -> Tuple[float, float, Optional[float], Optional[float]]:
        """The four prices per million tokens (input, output, cache read,
        cache write), as providers publish them."""
        def scaled(value: Optional[float]) -> Optional[float]:
            return None if value is None else round(value * _PER_MILLION, 6)
        return (scaled(self.input) or 0.0, scaled(self.output) or 0.0,
                scaled(self.cache_read), scaled(self.cache_write))


# Anthropic's snapshot dates (-20250929) name the same model at the same
# price; OpenAI's (-2024-05-13) may not (that gpt-4o snapshot cost more than
# gpt-4o), so they are not stripped.
_DATE = re.compile(r"-\d{8}$")
_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_REGION = re.compile(r"^(?:us|eu|apac|global|us-gov|jp|au|ca)\.")


def model_key(name: str) -> str:
    """A model name without how a provider or a log decorates it: lower
    case; no provider prefix (``anthropic/``, ``openai/``, Bedrock's
    ``anthropic.`` with a region prefix such as ``us.``); no version
    suffix (Bedrock's ``-v1:0``, ``-v2``), Anthropic's date suffix
    (``-20250929``, Vertex's ``@20250929``) or ``-latest``. OpenAI's dated
    snapshots (``gpt-4o-2024-05-13``) are kept: their prices may differ
    from the undated model's."""
    key = name.strip().lower()
    key = key.rsplit("/", 1)[-1]
    key = _REGION.sub("", key)
    if key.startswith(("anthropic.", "openai.")):
        key = key.split(".", 1)[1]
    key = key.split("@", 1)[0]
    for _ in range(2):  # "-20241022-v2:0": a version after a date
        key = _VERSION.sub("", key)
        key = _DATE.sub("", key)
        key = key.removesuffix("-latest")
    return key


class PriceTable(Mapping[str, Price]):
    """Prices by model name, as a read-only mapping; :meth:`find` also
    matches names spelt otherwise (see :func:`model_key`)."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices: Dict[str, Price] = dict(prices)
        self._by_key: Dict[str, Tuple[str, Price]] = {}
        for name in sorted(self._prices, key=lambda n: (len(n), n)):
            # The shortest name of a key wins (the undated one).
            self._by_key.setdefault(model_key(name), (name, self._prices[name]))

    def __getitem__(self, model: str) -> Price:
        return self._prices[model]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._prices))

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"<PriceTable of {len(self)} models>"

    def find(self, model: Optional[str]) -> Optional[Price]:
        """The price of ``model``: its exact entry, else the entry whose
        name means the same model; ``None`` if there is none."""
        if not model:
            return None
        exact = self._prices.get(model)
        if exact is not None:
            return exact
        found = self._by_key.get(model_key(model))
        return None if found is None else found[1]

    def updated(self, other: Mapping[str, Price]) -> PriceTable:
        """This table with ``other``'s entries added or replacing its own
        (also the entries of this table that mean the same model)."""
        keys = {model_key(name) for name in other}
        kept = {name: price for name, price in self._prices.items()
                if name not in other and model_key(name) not in keys}
        return PriceTable({**kept, **other})


def load_prices(path: Union[str, os.PathLike[str]]) -> PriceTable:
    """Read a price file: this package's format (``{"format":
    "telemetry_orm.prices/1", "source", "as_of", "models": {name: {"input",
    "output", "cache_read", "cache_write", "provider"}}}``, USD per token)
    or LiteLLM's ``model_prices_and_context_window.json`` (its
    ``input_cost_per_token``, ``output_cost_per_token``,
    ``cache_read_input_token_cost``, ``cache_creation_input_token_cost``;
    other keys are ignored, and entries without token prices, such as image
    models, are left out).

    A file that is not JSON, or a price that is negative, infinite or not a
    number, raises :class:`~telemetry_orm.TelemetryValidationError` naming
    the file and the model."""
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TelemetryValidationError("prices", f"{where}: cannot be read ({exc})") from None
    return parse_prices(text, where)


def parse_prices(text: str, where: str = "prices") -> PriceTable:
    """The price table of a price file's text (see :func:`load_prices`)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TelemetryValidationError("prices", f"{where}: not JSON ({exc})") from None
    except RecursionError:
        raise TelemetryValidationError("prices", f"{where}: not JSON (nested too deeply)"
                                       ) from None
    if not isinstance(data, dict):
        raise TelemetryValidationError("prices", f"{where}: not a JSON object")
    if "format" in data:
        return _ours(data, where)
    return _litellm(data, where)


def _ours(data: Dict[str, Any], where: str) -> PriceTable:
    if data["format"] != PRICE_FORMAT:
        raise TelemetryValidationError(
            "prices", f"{where}: format {data['format']!r} is not {PRICE_FORMAT!r}")
    models = data.get("models")
    if not isinstance(models, dict):
        raise TelemetryValidationError("prices", f"{where}: models: not an object")
    source, as_of = str(data.get("source") or where), str(data.get("as_of") or "")
    prices = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise TelemetryValidationError("prices", f"{where}: {name}: not an object")
        prices[name] = Price(
            _price(where, name, "input", entry.get("input"), required=True) or 0.0,
            _price(where, name, "output", entry.get("output"), required=True) or 0.0,
            _price(where, name, "cache_read", entry.get("cache_read")),
            _price(where, name, "cache_write", entry.get("cache_write")),
            entry.get("provider") if isinstance(entry.get("provider"), str) else None,
            source, as_of,
        )
    return PriceTable(prices)


def _litellm(data: Dict[str, Any], where: str) -> PriceTable:
    source = f"{Path(where).name} (LiteLLM format)"
    prices = {}
    for name, entry in data.items():
        if name == "sample_spec" or not isinstance(entry, dict):
            continue
        if "input_cost_per_token" not in entry or "output_cost_per_token" not in entry:
            continue  # priced otherwise (per image, per second …)
        provider = entry.get("litellm_provider")
        prices[name] = Price(
            _price(where, name, "input_cost_per_token", entry["input_cost_per_token"],
                   required=True) or 0.0,
            _price(where, name, "output_cost_per_token", entry["output_cost_per_token"],
                   required=True) or 0.0,
            _price(where, name, "cache_read_input_token_cost",
                   entry.get("cache_read_input_token_cost")),
            _price(where, name, "cache_creation_input_token_cost",
                   entry.get("cache_creation_input_token_cost")),
            provider if isinstance(provider, str) else None,
            source, "",
        )
    return PriceTable(prices)


def _price(where: str, model: str, field: str, value: Any, *, required: bool = False
           ) -> Optional[float]:
    if value is None and not required:
        return None
    if not is_amount(value):
        raise TelemetryValidationError(
            "prices", f"{where}: {model}: {field}: not a price in USD >= 0 ({value!r})")
    return float(value)


@functools.lru_cache(maxsize=1)
def shipped_prices() -> PriceTable:
    """The table shipped with the package."""
    text = resources.files("telemetry_orm").joinpath("data").joinpath("prices.json").read_text(
        encoding="utf-8")
    return parse_prices(text, "telemetry_orm/data/prices.json")


def default_prices() -> PriceTable:
    """The shipped table, with ``$TELEMETRY_PRICES``'s entries over it when
    that names a file."""
    table = shipped_prices()
    override = os.environ.get(ENV_PRICES)
    return table.updated(load_prices(override)) if override else table


def prices_with(path: Optional[Union[str, os.PathLike[str]]] = None) -> PriceTable:
    """The table in use: :func:`default_prices`, with ``path``'s entries
    over it when given (``--prices FILE``)."""
    table = default_prices()
    return table.updated(load_prices(path)) if path is not None else table


def cost_of(
    model: Optional[str],
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_creation_tokens: int = 0,
    prices: Optional[Mapping[str, Price]] = None,
) -> Optional[float]:
    """The list price in USD of a run of ``model`` with those tokens, or
    ``None`` when the model has no price (never a guess).

    >>> cost_of("claude-sonnet-4-5-20250929", input_tokens=1_000_000)
    3.0
    >>> cost_of("some-model-of-ours", input_tokens=1) is None
    True
    """
    table = prices if prices is not None else default_prices()
    if not isinstance(table, PriceTable):
        table = PriceTable(table)
    price = table.find(model)
    if price is None:
        return None
    return price.cost(input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens)
