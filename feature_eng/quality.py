"""Per-day data-quality figures and the reconciliation every extract must pass:

    lines read = accepted + quarantined + duplicates      (for the day's partition)
"""

from __future__ import annotations

from ple_runtime.errors import StageError


class ReconciliationError(StageError):
    """The lines of a day do not add up: a bug, never a data problem. Nothing is written.
    (A StageError, so `ple extract` reports it in one line with exit 1; ple_runtime.errors is
    a leaf module: feature_eng still reaches no path, session or write through it.)"""


def status_figures(rows) -> dict[str, int]:
    """{'accepted': n, 'duplicates': n, 'quarantined': n, 'quarantined:<reason>': n} from
    (status, reason, count) rows."""
    figures = {"accepted": 0, "quarantined": 0, "duplicates": 0}
    for row in rows:
        if row["status"] == "accepted":
            figures["accepted"] += row["count"]
        elif row["status"] == "duplicate":
            figures["duplicates"] += row["count"]
        else:
            figures["quarantined"] += row["count"]
            key = f"quarantined:{row['reason']}"
            figures[key] = figures.get(key, 0) + row["count"]
    return figures


def reconcile(day: str, lines_read: int, counts: dict[str, int]) -> None:
    accounted = counts["accepted"] + counts["quarantined"] + counts["duplicates"]
    by_reason = sum(v for k, v in counts.items() if k.startswith("quarantined:"))
    if accounted != lines_read or by_reason != counts["quarantined"]:
        raise ReconciliationError(
            f"{day}: {lines_read} lines read but accepted {counts['accepted']} + quarantined "
            f"{counts['quarantined']} + duplicates {counts['duplicates']} = {accounted} "
            f"(quarantined by reason: {by_reason}); refusing to write anything")


def data_quality_rows(day: str, figures: dict[str, float]) -> list[tuple[str, str, float]]:
    return [(day, metric, float(value)) for metric, value in sorted(figures.items())]


def format_summary(day: str, figures: dict[str, float]) -> str:
    width = max(len(k) for k in figures)
    lines = [f"extract {day}", "-" * (width + 16)]
    for key in sorted(figures):
        value = figures[key]
        shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:.4f}"
        lines.append(f"{key:<{width}}  {shown:>12}")
    return "\n".join(lines)
