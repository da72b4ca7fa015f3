"""`ple pipeline`: the whole pipeline locally, on embedded defaults.

    ple pipeline                      # everything under ./ple_data (or $PLE_DATA_DIR)
    ple pipeline --days 10 --models ple mmoe cgc single_task
    ple pipeline --force              # redo every stage

Stages, each skipped when its output is already there (so a re-run reuses work):
  1. generate  raw event logs for `days` days (with a little fault injection)
  2. extract   every day into the examples Delta table (Spark, local)
  3. train     PLE and the baselines needed for the MTL gain (Horovod, `workers` local processes)
               on days 1..N-2, validating on day N-1
  4. evaluate  the published candidate on day N (the test day), with MTL gain and an HTML report
  5. publish   behind the quality gate, into the local MLflow registry
Prints where the report and the registered model are, and the wall time per stage.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ple_runtime.config import JobConfig, Location, config_as_dict, parse_job_config, validate_config
from ple_runtime.lake import Lake, default_data_dir
from ple_runtime.lineage import file_sha256, run_context, write_json

REPO_ROOT = Path(__file__).resolve().parent.parent


class PipelineConfig(JobConfig):
    """Run generate -> extract -> train -> evaluate -> publish locally."""

    data_dir: Location = Field(default_factory=default_data_dir, description="data root for raw logs, lake, runs, registry")
    start_date: dt.date = Field(dt.date(2026, 1, 1), description="first day of generated logs")
    days: int = Field(8, ge=3, le=60, description="days of logs: N-2 to train, 1 to validate, the last to test")
    users: int = Field(2000, ge=10)
    items: int = Field(500, ge=10)
    impressions_per_day: int = Field(20_000, ge=100)
    fault_rate: float = Field(0.002, ge=0, le=0.05, description="share of raw lines corrupted on purpose")
    spec: Location = Field(str(REPO_ROOT / "conf" / "video_spec.yaml"), description="feature/task spec")
    models: list[str] = Field(["ple", "mmoe", "single_task"],
                              description="models to train; single_task gives the MTL gain baseline")
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"ple": {"specific_experts": 2, "shared_experts": 2},
                                 "cgc": {"specific_experts": 2, "shared_experts": 2}},
        description="hyperparameters per model name (e.g. --set model_params.ple.num_levels=3)")
    publish_model: str = Field("ple", description="which trained model is evaluated and published")
    # Uncertainty weighting keeps the rare tasks (comment: ~1.4% positives) from
    # being drowned by play's larger loss in the shared parameters.
    weighting: str = Field("uncertainty", description="loss weighting for every model")
    weighting_params: dict[str, Any] = Field(default_factory=dict, description="its parameters (e.g. dwa temperature)")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(1024, ge=32)
    lr: float = Field(2e-3, gt=0)
    workers: int = Field(2, ge=1, description="Horovod processes per training run")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="training's forward-pass arithmetic (TrainConfig.precision; auto = bf16 with AMX)")
    seed: int = 7
    force: bool = Field(False, description="redo every stage even when its output exists")
    training_mode: Literal["full", "incremental"] = Field(
        "full", description="publish_model's training: full retrain on the window, or incremental (warm start "
                            "from the production model on the days after its own; training/incremental.py)")
    full_retrain_every_days: int = Field(7, ge=1, description="incremental: full retrain when the production "
                                                              "model's last full retrain is this many days old")

    @model_validator(mode="after")
    def _check(self) -> "PipelineConfig":
        from ple_model import MODEL_NAMES

        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown models {unknown}; valid: {list(MODEL_NAMES)}")
        if self.publish_model not in self.models:
            raise ValueError(f"publish_model {self.publish_model!r} must be one of models {self.models}")
        from ple_model import model_hyperparameters

        for model, params in self.model_params.items():
            unknown = sorted(set(params) - set(model_hyperparameters(model))) if model in MODEL_NAMES else None
            if unknown is None:
                raise ValueError(f"model_params names unknown model {model!r}; valid: {list(MODEL_NAMES)}")
            if unknown:
                raise ValueError(f"model_params.{model} has unknown hyperparameters {unknown}; "
                                 f"valid: {sorted(model_hyperparameters(model))}")
        if not Path(self.spec).is_file():
            raise ValueError(f"spec file {self.spec} does not exist")
        return self

    def day(self, index: int) -> str:
        return (self.start_date + dt.timedelta(days=index)).isoformat()

    @property
    def all_days(self) -> list[str]:
        return [self.day(i) for i in range(self.days)]

    @property
    def train_days(self) -> tuple[str, str]:
        return self.day(0), self.day(self.days - 3)

    @property
    def validation_day(self) -> str:
        return self.day(self.days - 2)

    @property
    def test_day(self) -> str:
        return self.day(self.days - 1)


class StageFailed(RuntimeError):
    pass


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
    from datagen.generate import GenerateConfig
    from extraction.extract import ExtractConfig
    from jobs.evaluate import EvaluateConfig
    from jobs.publish import PublishConfig
    from training.config import TrainConfig

    lake = Lake(config.data_dir)
    runs = Path(lake.runs, "pipeline")
    first, last = config.train_days
    train = {model: validate_config(TrainConfig, {
        "table": lake.examples, "train_start": first, "train_end": last, "validation_date": config.validation_day,
        "spec": config.spec, "model": model, "model_params": config.model_params.get(model, {}),
        "weighting": config.weighting, "weighting_params": config.weighting_params,
        "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
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
    from training import resolve_snapshot

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


def _same_config(path: Path, config) -> bool:
    return path.is_file() and json.loads(path.read_text()) == config_as_dict(config)


def _evaluation_inputs(config: PipelineConfig, evaluate, models: list[Path]) -> dict[str, Any]:
    """What an evaluation's result depends on: its config, the models' bytes and the table
    version recorded for the test day (a re-extract of that day moves it)."""
    from evaluation.snapshot import recorded_version

    return {"config": config_as_dict(evaluate), "models": {str(m): file_sha256(m / "model.pt") for m in models},
            "table_version": recorded_version(Lake(config.data_dir).examples, config.test_day)}


def _published(config: PipelineConfig, candidate: Path) -> str | None:
    """The registry version the production alias points at, when it holds exactly this model."""
    from evaluation.registry import registry_settings, version_by_alias

    production = version_by_alias(registry_settings(config.data_dir))
    if production is None or production.tags.get("ple.model_sha256") != file_sha256(candidate / "model.pt"):
        return None
    return str(production.version)


def _refused_before(config: PipelineConfig, candidate: Path) -> Path | None:
    """The record of a gate refusal of exactly this model, on the test day's same rows, against the
    same production version: the verdict stands, so a re-run reuses it instead of asking again."""
    from evaluation.registry import registry_settings, version_by_alias
    from evaluation.snapshot import recorded_version

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
    from ple_runtime.errors import StageError

    done = set() if config.force else _extracted_days(config.data_dir)
    missing = [d for d in config.all_days if d not in done]
    if not missing:
        print("every day already extracted: reused")
        return True
    for first, last in _day_ranges(missing):
        try:
            extract_days(validate_config(type(extract), {**config_as_dict(extract), "start": first, "end": last}))
        except StageError as error:
            raise StageFailed(f"extract {first}..{last}: {error}") from None
    return False


def _train(config: PipelineConfig, model: str, train) -> bool:
    from training.launch import run_training

    out = Path(train.out)
    record = out / "pipeline_train_config.json"
    if not config.force and (out / "model.pt").is_file() and _same_config(record, train):
        print(f"{model}: a finished run with these settings exists: reused")
        return True
    status = run_training(train)
    if status:
        raise StageFailed(f"training {model} into {out} exited with status {status}")
    write_json(record, config_as_dict(train))
    return False


def _evaluate(config: PipelineConfig, evaluate) -> bool:
    import tempfile

    from evaluation.config import EvaluationFailed
    from evaluation.evaluate import run_evaluation

    runs = Path(Lake(config.data_dir).runs, "pipeline")
    report_dir = Path(evaluate.out)
    inputs = _evaluation_inputs(config, evaluate, [runs / m for m in config.models])
    inputs_path = report_dir / "pipeline_evaluation_inputs.json"
    if (not config.force and (report_dir / "report.html").is_file() and inputs_path.is_file()
            and json.loads(inputs_path.read_text()) == json.loads(json.dumps(inputs))):
        print(f"the report of these models on {config.test_day} (table version {inputs['table_version']}) "
              "exists: reused")
        return True
    try:
        with tempfile.TemporaryDirectory(prefix="ple-evaluate-") as workdir:
            result = run_evaluation(evaluate, Path(workdir))
    except EvaluationFailed as error:
        raise StageFailed(f"evaluate: {error}") from None
    for line in result["summary"]:
        print(f"  {line}")
    write_json(inputs_path, inputs)
    return False


def _publish(config: PipelineConfig, publish) -> bool:
    import tempfile

    from evaluation.config import EvaluationFailed
    from evaluation.export import ExportMismatch
    from evaluation.publish import run_publish
    from evaluation.registry import LeaseLost

    version = None if config.force else _published(config, Path(publish.model))
    if version is not None:
        print(f"{config.publish_model} is already production (version {version}): reused")
        return True
    refused = None if config.force else _refused_before(config, Path(publish.model))
    if refused is not None:
        print(f"the quality gate already refused {config.publish_model} on these rows (record {refused}): reused")
        return True
    try:
        with tempfile.TemporaryDirectory(prefix="ple-publish-") as workdir:
            outcome = run_publish(publish, Path(workdir))
    except (EvaluationFailed, ExportMismatch, TimeoutError, LeaseLost) as error:
        raise StageFailed(f"publish: {error}") from None
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
        reused = work()
        timings[name] = round(time.perf_counter() - started, 1)
        stages[name] = "reused" if reused else "ran"
        print(f"--- {name} {'reused' if reused else 'took'} {timings[name]:.1f} s", flush=True)

    _banner(1, "generate", f"{config.days} days of raw logs from {config.day(0)}")
    stage("generate", lambda: _generate(config, configs.generate))
    _banner(2, "extract", f"{config.days} days into {lake.examples}")
    stage("extract", lambda: _extract(config, configs.extract))
    for model, train in configs.train.items():
        _banner(3, "train", f"{model} with {config.workers} worker(s) -> {train.out}")
        stage(f"train {model}", lambda train=train, model=model: _train(config, model, train))
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


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(PipelineConfig, argv, "ple pipeline", __doc__.split("\n")[0])
    started = time.perf_counter()
    try:
        record = run(config)
    except StageFailed as err:
        print(f"\npipeline stopped: {err}", file=sys.stderr)
        return 1
    total = time.perf_counter() - started
    print("\n=== pipeline finished in {:.0f} s".format(total))
    for stage, seconds in record["stage_seconds"].items():
        print(f"  {stage:<22} {seconds:7.1f} s  {record['stages'][stage]}")
    print(f"\nreport:          {record['outputs']['report']}")
    print(f"metrics:         {record['outputs']['metrics']}")
    from evaluation.registry import registry_settings, version_by_alias

    production = version_by_alias(registry_settings(config.data_dir))
    held = (f"alias `production` -> v{production.version}" if production is not None
            else "nothing published yet: the quality gate refused the model (see above)")
    print(f"registry:        {record['outputs']['registry']} (MLflow, model `ple_video`, {held})")
    print(f"pipeline record: {Path(config.data_dir, 'pipeline_record.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
