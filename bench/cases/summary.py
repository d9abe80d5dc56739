"""The headline table of `make bench`: touchpoints/s per case and the ratios between them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CEILING = "ceiling"
NAIVE = "naive"
QUIX = "quix"
WARROOM_PREFIXES = ("warroom-", "full-")


@dataclass(frozen=True)
class Row:
    case: str
    runs: int
    events: int
    seconds: float
    rate: float
    """Touchpoints per second."""
    rate_range: tuple[float, float] | None
    cpu_percent: float
    state_writes_per_event: float
    interventions: int
    verdicts: int = 0


def ratio(rates: Mapping[str, float], case: str, base: str) -> float | None:
    """``case``'s rate over ``base``'s, or None when either is missing or zero."""
    if case not in rates or base not in rates or rates[base] <= 0:
        return None
    return rates[case] / rates[base]


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render(rows: Sequence[Row]) -> str:
    """A markdown table; ``vs quix`` only on Warroom's rows."""
    rates = {row.case: row.rate for row in rows}
    header = (
        "case",
        "runs",
        "touchpoints",
        "seconds",
        "touchpoints/s",
        "range",
        "vs naive",
        "vs ceiling",
        "vs quix",
        "worker cpu",
        "state writes/event",
        "interventions",
        "verdicts",
    )
    table = [header]
    for row in rows:
        warroom = row.case.startswith(WARROOM_PREFIXES)
        table.append(
            (
                row.case,
                str(row.runs),
                f"{row.events:,}",
                f"{row.seconds:.2f}",
                f"{row.rate:,.0f}",
                f"{row.rate_range[0]:,.0f}-{row.rate_range[1]:,.0f}" if row.rate_range else "-",
                _times(ratio(rates, row.case, NAIVE)),
                _times(ratio(rates, row.case, CEILING)),
                _times(ratio(rates, row.case, QUIX)) if warroom else "-",
                f"{row.cpu_percent:.0f}%",
                f"{row.state_writes_per_event:.2f}",
                f"{row.interventions:,}",
                f"{row.verdicts:,}",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for index, line in enumerate(table):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if index == 0:
            lines.append(
                "|"
                + "|".join(
                    "-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
                )
                + "|"
            )
    return "\n".join(lines)
