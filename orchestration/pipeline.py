"""The whole chain (`ple pipeline`): every stage through the same typed `run(config)` its own job calls.

The stages (jobs/pipeline.py lists them; docs/PIPELINE.md says when each is reused) run in order, each
skipped when its output is already there, so a re-run reuses work.
`run(config)` returns the pipeline record (stage timings, what was reused, where the outputs are);
a stage that fails raises StageFailed (a StageError carrying that stage's exit code).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ple_runtime.config import config_as_dict, validate_config
from ple_runtime.errors import StageError
from ple_runtime.lake import Lake
from ple_runtime.lineage import file_sha256, run_context, write_json

from .config import PipelineConfig
from .runs import train_or_reuse


class StageFailed(StageError):
    """A stage of the chain failed; the message names the stage, `exit_code` is the stage's own."""


@dataclass(frozen=True)
class StageConfigs:
    """Every stage's own job config, built and validated before the first stage runs."""

    generate: Any
    extract: Any            # the whole range; the stage runs the days still missing
    train: dict[str, Any]   # model name -> TrainConfig
    evaluate: Any
    publish: Any


def stage_configs(config: PipelineConfig) -> StageConfigs:
    """The pipeline's settings as each job's typed config (the same objects `ple <job>` builds)."""
    from evaluation.config import EvaluateConfig
    from extraction.extract import ExtractConfig
    from datagen.generate import GenerateConfig
    from publishing.config import PublishConfig
    from training.config import TrainConfig

    lake = Lake(config.data_dir)
    runs = Path(lake.runs, "pipeline")
    first, last = config.train_days
    train = {model: validate_config(TrainConfig, {
        "table": lake.examples, "train_start": first, "train_end": last, "validation_date": config.validation_day,
        "spec": config.spec, "model": model, "model_params": config.model_params_of(model),
        "weighting": config.weighting, "weighting_params": config.weighting_params,
        "task_weights": config.task_weights, "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "workers": config.workers, "seed": config.seed, "out": str(runs / model), "precision": config.precision,
        **({"training_mode": config.training_mode, "full_retrain_every_days": config.full_retrain_every_days}
           if model == config.publish_model else {})})
        for model in config.models}
    candidate = str(runs / config.publish_model)
    others = [str(runs / m) for m in config.models if m not in (config.publish_model, "single_task")]
    single_task = [str(runs / "single_task")] if ("single_task" in config.models
                                                 and config.publish_model != "single_task") else []
    return StageConfigs(
        generate=validate_config(GenerateConfig, {
            "data_dir": config.data_dir, "start_date": config.start_date, "days": config.days, "users": config.users,
            "items": config.items, "impressions_per_day": config.impressions_per_day,
            "fault_rate": config.fault_rate, "seed": config.seed, "overwrite": True}),
        extract=validate_config(ExtractConfig, {"data_dir": config.data_dir, "start": config.day(0),
                                                "end": config.test_day}),
        train=train,
        evaluate=validate_config(EvaluateConfig, {
            "model": candidate, "date": config.test_day, "data_dir": config.data_dir,
            "out": str(Path(lake.reports, "pipeline", config.test_day)), "single_task_runs": single_task,
            "compare": others}),
        publish=validate_config(PublishConfig, {"model": candidate, "date": config.test_day,
                                                "data_dir": config.data_dir}),
    )


def _banner(index: int, name: str, what: str) -> None:
    print(f"\n=== [{index}/5] {name}: {what}", flush=True)


def _generated_days(raw_events: Path) -> set[str]:
    """Days whose raw partition is complete (its _SUCCESS marker, written last)."""
    from extraction.raw_logs import MARKER

    if not raw_events.is_dir():
        return set()
    return {p.name.removeprefix("dt=") for p in raw_events.glob("dt=*") if (p / MARKER).is_file()}


def _extracted_days(data_dir: str) -> set[str]:
    """Days with a data-quality record: extract writes it last, after the examples.

    Read from the table's Delta log, so a re-run that has nothing to extract
    starts no Spark session."""
    from ple_runtime.snapshot import resolve_snapshot

    path = Lake(data_dir).data_quality
    if not Path(path, "_delta_log").is_dir():
        return set()
    return {f.partition_values["dt"] for f in resolve_snapshot(path).files}


def _day_ranges(days: list[str]) -> list[tuple[str, str]]:
    """Consecutive runs of ISO days, in order: one extract application each."""
    ranges: list[list[str]] = []
    for day in days:
        if ranges and dt.date.fromisoformat(day) - dt.date.fromisoformat(ranges[-1][1]) == dt.timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return [(first, last) for first, last in ranges]


def _evaluation_inputs(config: PipelineConfig, evaluate, models: list[Path]) -> dict[str, Any]:
    """What an evaluation's result depends on: its config, the models' bytes and the table
    version recorded for the test day (a re-extract of that day moves it)."""
    from ple_runtime.snapshot import recorded_version

    return {"config": config_as_dict(evaluate), "models": {str(m): file_sha256(m / "model.pt") for m in models},
            "table_version": recorded_version(Lake(config.data_dir).examples, config.test_day)}


def _published(config: PipelineConfig, candidate: Path) -> str | None:
    """The registry version the production alias points at, when it holds exactly this model."""
    from model_registry.registry import registry_settings, version_by_alias

    production = version_by_alias(registry_settings(config.data_dir))
    if production is None or production.tags.get("ple.model_sha256") != file_sha256(candidate / "model.pt"):
        return None
    return str(production.version)


def _refused_before(config: PipelineConfig, candidate: Path) -> Path | None:
    """The record of a gate refusal of exactly this model, on the test day's same rows, against the
    same production version: the verdict stands, so a re-run reuses it instead of asking again."""
    from model_registry.registry import registry_settings, version_by_alias
    from ple_runtime.snapshot import recorded_version

    production = version_by_alias(registry_settings(config.data_dir))
    verdict_key = (file_sha256(candidate / "model.pt"), config.test_day,
                   recorded_version(Lake(config.data_dir).examples, config.test_day),
                   str(production.version) if production is not None else None)
    for path in sorted(Path(Lake(config.data_dir).reports, "publish").glob("publish-*-gate_failed.json"),
                       reverse=True):
        record = json.loads(path.read_text())
        snapshot, was = record.get("snapshot") or {}, (record.get("production") or {}).get("version")
        key = ((record.get("candidate") or {}).get("sha256"), snapshot.get("date"), snapshot.get("version"),
               str(was) if was is not None else None)
        if key == verdict_key:
            return path
    return None


def _generate(config: PipelineConfig, generate) -> bool:
    from datagen.generate import run as generate_raw_logs

    lake = Lake(config.data_dir)
    missing = sorted(set(config.all_days) - _generated_days(Path(lake.raw, "events")))
    if not (missing or config.force):
        print(f"raw logs for all {config.days} days already under {lake.raw}: reused")
        return True
    generate_raw_logs(generate)
    return False


def _extract(config: PipelineConfig, extract) -> bool:
    from extraction.extract import run as extract_days

    done = set() if config.force else _extracted_days(config.data_dir)
    missing = [d for d in config.all_days if d not in done]
    if not missing:
        print("every day already extracted: reused")
        return True
    for first, last in _day_ranges(missing):
        try:
            extract_days(validate_config(type(extract), {**config_as_dict(extract), "start": first, "end": last}))
        except StageError as error:
            failure = StageFailed(f"days {first}..{last}: {error}")
            failure.exit_code = error.exit_code
            raise failure from None
    return False


def _evaluate(config: PipelineConfig, evaluate_config) -> bool:
    from evaluation.evaluate import run as evaluate

    runs = Path(Lake(config.data_dir).runs, "pipeline")
    report_dir = Path(evaluate_config.out)
    inputs = _evaluation_inputs(config, evaluate_config, [runs / m for m in config.models])
    inputs_path = report_dir / "pipeline_evaluation_inputs.json"
    if (not config.force and (report_dir / "report.html").is_file() and inputs_path.is_file()
            and json.loads(inputs_path.read_text()) == json.loads(json.dumps(inputs))):
        print(f"the report of these models on {config.test_day} (table version {inputs['table_version']}) "
              "exists: reused")
        return True
    result = evaluate(evaluate_config)
    for line in result["summary"]:
        print(f"  {line}")
    write_json(inputs_path, inputs)
    return False


def _publish(config: PipelineConfig, publish) -> bool:
    from publishing.publish import run as publish_model

    version = None if config.force else _published(config, Path(publish.model))
    if version is not None:
        print(f"{config.publish_model} is already production (version {version}): reused")
        return True
    refused = None if config.force else _refused_before(config, Path(publish.model))
    if refused is not None:
        print(f"the quality gate already refused {config.publish_model} on these rows (record {refused}): reused")
        return True
    outcome = publish_model(publish)
    for message in outcome.messages:
        print(f"publish: {message}")
    if outcome.status == "gate_failed":  # a verdict, not an error (as in the daily DAG): nothing published
        print(f"publish: the quality gate REFUSED {publish.model} (reasons above; a model trained on a few small "
              f"days often cannot clear the floors: conf/publish.yaml); nothing published; record "
              f"{outcome.record_path}")
    return False


def run(config: PipelineConfig) -> dict:
    configs = stage_configs(config)  # every stage's settings checked before the first one runs
    lake = Lake(config.data_dir)
    timings: dict[str, float] = {}
    stages: dict[str, str] = {}  # stage -> "ran" | "reused"

    def stage(name: str, work) -> None:
        started = time.perf_counter()
        try:
            reused = work()
        except StageError as error:  # the one place a stage's failure gets the stage's name
            failure = StageFailed(f"{name}: {error}")
            failure.exit_code = error.exit_code
            raise failure from error
        timings[name] = round(time.perf_counter() - started, 1)
        stages[name] = "reused" if reused else "ran"
        print(f"--- {name} {'reused' if reused else 'took'} {timings[name]:.1f} s", flush=True)

    _banner(1, "generate", f"{config.days} days of raw logs from {config.day(0)}")
    stage("generate", lambda: _generate(config, configs.generate))
    _banner(2, "extract", f"{config.days} days into {lake.examples}")
    stage("extract", lambda: _extract(config, configs.extract))
    for model, train in configs.train.items():
        _banner(3, "train", f"{model} with {config.workers} worker(s) -> {train.out}")
        stage(f"train {model}", lambda train=train: train_or_reuse(train, "pipeline_train_config.json", config.force))
    _banner(4, "evaluate", f"{config.publish_model} on the test day {config.test_day}")
    stage("evaluate", lambda: _evaluate(config, configs.evaluate))
    _banner(5, "publish", f"{config.publish_model} behind the quality gate")
    stage("publish", lambda: _publish(config, configs.publish))

    outputs = {**{f"run {m}": t.out for m, t in configs.train.items()},
               "report": str(Path(configs.evaluate.out, "report.html")),
               "metrics": str(Path(configs.evaluate.out, "metrics.json")), "registry": lake.registry}
    record = {"config": config_as_dict(config), "context": run_context(), "stage_seconds": timings,
              "stages": stages, "outputs": outputs}
    write_json(Path(config.data_dir, "pipeline_record.json"), record)
    return record


def print_summary(config: PipelineConfig, record: dict, total_seconds: float) -> None:
    """What `ple pipeline` prints at the end: time per stage, where the outputs are, what is published."""
    from model_registry.registry import registry_settings, version_by_alias

    print("\n=== pipeline finished in {:.0f} s".format(total_seconds))
    for stage, seconds in record["stage_seconds"].items():
        print(f"  {stage:<22} {seconds:7.1f} s  {record['stages'][stage]}")
    print(f"\nreport:          {record['outputs']['report']}")
    print(f"metrics:         {record['outputs']['metrics']}")
    production = version_by_alias(registry_settings(config.data_dir))
    held = (f"alias `production` -> v{production.version}" if production is not None
            else "nothing published yet: the quality gate refused the model (see above)")
    print(f"registry:        {record['outputs']['registry']} (MLflow, model `ple_video`, {held})")
    print(f"pipeline record: {Path(config.data_dir, 'pipeline_record.json')}")
