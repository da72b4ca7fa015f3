"""Incremental training (`--training-mode incremental`): warm start from the production model on the
days it has not trained on, with a full retrain on the whole window when that is not safe or is due.

The decision (`decide`, on the driver, before the plan) for a run whose window is
[train_start, train_end], validated on validation_date:
- the candidate is --init-from, default the registry's production model (models:/ple_video@production);
- FULL retrain on the window when: there is no candidate (none published yet, unreadable), it
  records no training days, it has trained or validated on data that is not strictly before
  this run's (its train_end >= this train_end, or its validation day >= this validation day:
  a backfill of a past day never warm-starts from a model of later data), it is older than the
  window (its train_end + 1 < train_start), or the last full retrain in its chain ended
  `full_retrain_every_days` or more days before this train_end;
- else WARM START from it on [its train_end + 1, train_end] (the newest day(s)).
The decision and its reason are recorded in the plan and the run record; the model file carries
its chain (`last_full_retrain_end`) so the next day can count days since the last full retrain.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ple_runtime.config import ConfigError

from .config import TrainConfig

PRODUCTION_REF = "models:/ple_video@production"


class TrainingDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["full", "warm_start"]
    reason: str
    train_start: dt.date
    train_end: dt.date
    candidate: str | None = None
    candidate_trained_on: dict[str, Any] | None = None
    last_full_retrain_end: dt.date             # of the chain this model belongs to


def decide(config: TrainConfig) -> tuple[TrainConfig, TrainingDecision | None]:
    """(the config this run trains with, the decision); (config, None) for --training-mode full."""
    if config.training_mode == "full":
        return config, None
    if config.table is None:
        raise ConfigError("--training-mode incremental needs --table with --train-start/--train-end "
                          "(it chooses days of the window)")
    ref = config.init_from or PRODUCTION_REF

    def full(reason: str, trained: dict[str, Any] | None = None) -> tuple[TrainConfig, TrainingDecision]:
        print(f"ple train: full retrain on {config.train_start}..{config.train_end}: {reason}", flush=True)
        return config.model_copy(update={"init_from": None}), TrainingDecision(
            mode="full", reason=reason, train_start=config.train_start, train_end=config.train_end,
            candidate=ref, candidate_trained_on=trained, last_full_retrain_end=config.train_end)

    from .warm_start import resolve_init_model, trained_on

    try:
        source = resolve_init_model(config.model_copy(update={"init_from": ref}))
    except ConfigError as error:
        return full(f"no model to warm-start from ({error})")
    trained = trained_on(source)
    why_not = _why_not_warm_start(ref, trained, config)
    if why_not:
        return full(why_not, trained)
    start = dt.date.fromisoformat(str(trained["train_end"])) + dt.timedelta(days=1)
    seen_end = trained["train_end"]
    last_full = dt.date.fromisoformat(str(trained.get("last_full_retrain_end") or seen_end))
    reason = f"warm start from {ref} (trained up to {seen_end}) on {start}..{config.train_end}"
    print(f"ple train: {reason}", flush=True)
    return config.model_copy(update={"init_from": ref, "train_start": start}), TrainingDecision(
        mode="warm_start", reason=reason, train_start=start, train_end=config.train_end, candidate=ref,
        candidate_trained_on=trained, last_full_retrain_end=last_full)


def _why_not_warm_start(ref: str, trained: dict[str, Any] | None, config: TrainConfig) -> str | None:
    """Why the candidate cannot be warm-started from for this run (None: it can)."""
    if not trained or not trained.get("train_end"):
        return f"{ref} records no training days"
    seen_end = dt.date.fromisoformat(str(trained["train_end"]))
    seen_validation = trained.get("validation_date")
    if seen_end >= config.train_end or (seen_validation and dt.date.fromisoformat(str(seen_validation))
                                        >= config.validation_date):
        return (f"{ref} trained on data up to {seen_end} (validated on {seen_validation}), not strictly before "
                f"this run's {config.train_end} (validation {config.validation_date}): a model of later data is "
                "never warm-started from (backfills)")
    if seen_end + dt.timedelta(days=1) < config.train_start:
        return f"{ref} trained up to {seen_end}, before the window {config.train_start}..{config.train_end}"
    last_full = dt.date.fromisoformat(str(trained.get("last_full_retrain_end") or seen_end))
    if (config.train_end - last_full).days >= config.full_retrain_every_days:
        return (f"the last full retrain of {ref}'s chain ended {last_full}, {config.full_retrain_every_days} or "
                f"more days before {config.train_end} (--full-retrain-every-days)")
    return None
