"""The settings of the raw-logs -> examples transformations, as one typed object.

`extraction.extract.ExtractConfig` IS an `ExtractParams` (it adds paths, dates and flags),
so the job hands its validated config to `feature_eng` as it is: no field is copied.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class ExtractParams(BaseModel):
    """Attribution, history and validation settings (docs/DATA.md explains each)."""

    attribution_window_hours: float = Field(6.0, gt=0, le=24,
                                            description="engagement counts if within this long after the impression")
    stats_window_days: int = Field(7, ge=1, le=365, description="history statistics: days before D to use")
    smoothing_weight: float = Field(20.0, ge=0, description="prior strength, in pseudo-impressions over a full "
                                    "window (a window holding d of its days: weight * d / stats_window_days)")
    max_late_hours: float = Field(24.0, ge=0, description="clock_skew if ts is earlier than partition start minus this")
    max_early_minutes: float = Field(60.0, ge=0, description="clock_skew if ts is later than partition end plus this")
    max_watch_ms: int = Field(4 * 3600 * 1000, gt=0, description="absurd_watch_ms above this")

    def history_range(self, day: str) -> tuple[str, str]:
        """First and last dt (inclusive) of the statistics window of `day`: days strictly before it."""
        return shift_day(day, -self.stats_window_days), shift_day(day, -1)


def shift_day(day: str, days: int) -> str:
    """`day` (YYYY-MM-DD) moved by `days` days."""
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def neighbours(day: str) -> tuple[str, str]:
    """The partitions read beside `day`: (D-1, D+1)."""
    return shift_day(day, -1), shift_day(day, 1)
