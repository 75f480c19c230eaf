"""What a turn costs: a dated table of list prices, overridable in ``config.toml``.

Prices are US dollars per million tokens, input and output, as the providers published them
on :data:`PRICES_AS_OF`; nothing is fetched at run time (a notebook may have no network, and a
price that changes under a running session would make its totals meaningless). Prices go out
of date: set your own in ``config.toml``::

    [prices."openai:gpt-4.1"]
    input = 2.0        # dollars per million input tokens
    output = 8.0       # dollars per million output tokens

A key is a model id (``provider:model``) or a provider name alone (every model of that
provider: ``local``, ``echo`` cost nothing). A dated snapshot (``openai:gpt-4.1-2025-04-14``)
takes the price of its family, the longest key it starts with. A model with no price gets no
``cost``: an unknown price is never reported as zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["DEFAULT_PRICES", "PRICES_AS_OF", "Price", "PriceTable"]

#: the date the table below was taken from the providers' price pages
PRICES_AS_OF = "2025-08-15"


@dataclass(frozen=True, slots=True)
class Price:
    """Dollars per million input and output tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The dollars ``input_tokens`` in and ``output_tokens`` out cost (10 decimals)."""
        return round((input_tokens * self.input + output_tokens * self.output) / 1e6, 10)


#: list prices on :data:`PRICES_AS_OF` (no batch, cache or long-context discounts)
DEFAULT_PRICES: dict[str, Price] = {
    "openai:gpt-5": Price(1.25, 10.0),
    "openai:gpt-5-mini": Price(0.25, 2.0),
    "openai:gpt-5-nano": Price(0.05, 0.40),
    "openai:gpt-4.1": Price(2.0, 8.0),
    "openai:gpt-4.1-mini": Price(0.40, 1.60),
    "openai:gpt-4.1-nano": Price(0.10, 0.40),
    "openai:gpt-4o": Price(2.50, 10.0),
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "openai:o3": Price(2.0, 8.0),
    "openai:o3-mini": Price(1.10, 4.40),
    "openai:o4-mini": Price(1.10, 4.40),
    "anthropic:claude-opus-4-1": Price(15.0, 75.0),
    "anthropic:claude-opus-4": Price(15.0, 75.0),
    "anthropic:claude-sonnet-4-5": Price(3.0, 15.0),
    "anthropic:claude-sonnet-4": Price(3.0, 15.0),
    "anthropic:claude-3-7-sonnet": Price(3.0, 15.0),
    "anthropic:claude-haiku-4-5": Price(1.0, 5.0),
    "anthropic:claude-3-5-haiku": Price(0.80, 4.0),
    # models that run on this machine cost nothing per token
    "local": Price(0.0, 0.0),
    "echo": Price(0.0, 0.0),
}


def _price(key: str, value: Any) -> Price:
    if not isinstance(value, Mapping) or set(value) != {"input", "output"}:
        raise ConfigError(
            f'[prices."{key}"] needs exactly input = ... and output = ... '
            "(dollars per million tokens)"
        )
    numbers = []
    for side in ("input", "output"):
        number = value[side]
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            raise ConfigError(
                f'[prices."{key}"] {side} is a number >= 0 (dollars per million tokens), '
                f"not {number!r}"
            )
        numbers.append(float(number))
    return Price(*numbers)


def _snapshot_of(model_id: str, family: str) -> bool:
    """Whether ``model_id`` is a dated snapshot of ``family`` (``family-2025-04-14``), not
    another model that shares its start (``o3-pro`` is not ``o3``)."""
    rest = model_id[len(family) :]
    return model_id.startswith(family) and rest[:1] == "-" and rest[1:2].isdigit()


class PriceTable:
    """The shipped prices with the config file's on top; looks a model id's price up."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self._prices = dict(DEFAULT_PRICES)
        for key, value in (overrides or {}).items():
            self._prices[str(key)] = _price(str(key), value)

    def price(self, model_id: str) -> Price | None:
        """The price of ``model_id`` (``provider:model``), or None when unknown."""
        found = self._prices.get(model_id)
        if found is not None:
            return found
        family = [k for k in self._prices if ":" in k and _snapshot_of(model_id, k)]
        if family:
            return self._prices[max(family, key=len)]
        return self._prices.get(model_id.split(":", 1)[0])

    def cost(
        self, model_id: str, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        """What a call of ``model_id`` cost in dollars, or None (no price, or no usage)."""
        price = self.price(model_id)
        if price is None or input_tokens is None or output_tokens is None:
            return None
        return price.cost(input_tokens, output_tokens)
