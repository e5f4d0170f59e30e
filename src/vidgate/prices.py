"""Prices: what a task costs, quoted when it is accepted (`cost` on the task from creation).

A price file (`VIDGATE_PRICES_FILE`, TOML or JSON) lists per-second rates by provider, model,
resolution and audio, with optional per-mode overrides; the shipped defaults follow public list
prices for the upstreams and charge nothing for the local renderer. A model/provider without a
rate costs 0. Amounts are Decimal, in the currency of the file (`currency`, USD by default).

    currency = "USD"
    [vidu.viduq3]
    per_second = { "540p" = 0.0425, "720p" = 0.085, "1080p" = 0.10625 }
    [pixverse."pixverse-v6"]
    per_second = { "360p" = 0.025, "720p" = 0.09 }
    per_second_audio = { "360p" = 0.035, "720p" = 0.115 }
    [pixverse."pixverse-v6".modes.extend]
    per_second = { "360p" = 0.025 }
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from vidgate.catalog import VideoRequest

#: Reseller list prices per second (see README, "Prices"); `local` is free unless configured.
DEFAULT_PRICES: dict[str, Any] = {
    "currency": "USD",
    "vidu": {
        "viduq3": {"per_second": {"540p": 0.0425, "720p": 0.085, "1080p": 0.10625}},
        "viduq3-mix": {"per_second": {"720p": 0.10625, "1080p": 0.1275}},
    },
    "pixverse": {
        "pixverse-v6": {
            "per_second": {"360p": 0.025, "540p": 0.045, "720p": 0.09, "1080p": 0.115},
            "per_second_audio": {"360p": 0.035, "540p": 0.06, "720p": 0.115, "1080p": 0.145},
        },
    },
    "apimart": {
        "viduq3": {"per_second": {"540p": 0.0425, "720p": 0.085, "1080p": 0.10625}},
        "viduq3-mix": {"per_second": {"720p": 0.10625, "1080p": 0.1275}},
        "pixverse-v6": {
            "per_second": {"360p": 0.025, "540p": 0.045, "720p": 0.09, "1080p": 0.115},
            "per_second_audio": {"360p": 0.035, "540p": 0.06, "720p": 0.115, "1080p": 0.145},
        },
    },
}

CENT = Decimal("0.000001")


class PriceFileError(ValueError):
    pass


@dataclass(frozen=True)
class PriceTable:
    currency: str
    rates: dict[str, Any]

    def quote(self, provider: str, request: VideoRequest) -> Decimal:
        """The cost of `request` served by `provider`: per-second rate times duration."""
        entry = self.rates.get(provider, {}).get(request.model)
        if not entry:
            return Decimal(0)
        entry = {**entry, **(entry.get("modes", {}).get(request.mode) or {})}
        resolution = str(getattr(request, "resolution", ""))
        table = entry.get("per_second_audio") if request.has_audio and "per_second_audio" in entry else None
        rate = (table or entry.get("per_second") or {}).get(resolution)
        if rate is None:
            return Decimal(0)
        return (Decimal(str(rate)) * request.clip_seconds).quantize(CENT, rounding=ROUND_HALF_UP)


def load(path: str | Path | None) -> PriceTable:
    """The price table from `path` (TOML or JSON), else the shipped defaults."""
    if not path:
        data: dict[str, Any] = DEFAULT_PRICES
    else:
        file = Path(path)
        try:
            text = file.read_text()
            data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise PriceFileError(f"cannot read price file {file}: {exc}") from exc
    currency = str(data.get("currency", "USD"))
    rates = {k: v for k, v in data.items() if k != "currency"}
    _validate(rates)
    return PriceTable(currency, rates)


def _validate(rates: dict[str, Any]) -> None:
    for provider, models in rates.items():
        if not isinstance(models, dict):
            raise PriceFileError(f"[{provider}] must be a table of models")
        for model, entry in models.items():
            for name in ("per_second", "per_second_audio"):
                for tier, rate in (entry.get(name) or {}).items():
                    if not isinstance(rate, int | float) or rate < 0:
                        raise PriceFileError(f"{provider}.{model}.{name}.{tier} must be a number >= 0")
            for mode, override in (entry.get("modes") or {}).items():
                _validate({provider: {f"{model} (mode {mode})": override}})
