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
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from ple_runtime.config import JobConfig, Location, config_as_dict, parse_job_config
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
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(1024, ge=32)
    lr: float = Field(2e-3, gt=0)
    workers: int = Field(2, ge=1, description="Horovod processes per training run")
    seed: int = 7
    force: bool = Field(False, description="redo every stage even when its output exists")

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


def _banner(index: int, name: str, what: str) -> None:
    print(f"\n=== [{index}/5] {name}: {what}", flush=True)


def _call(job: str, args: list[str]) -> None:
    """Run a job's entry point in this process (one SparkSession for all Spark stages)."""
    import importlib

    module = importlib.import_module(f"jobs.{job}")
    status = module.main(args)
    if status:
        raise StageFailed(f"`ple {job} {' '.join(args)}` exited with status {status}")


def _generated_days(raw_events: Path) -> set[str]:
    if not raw_events.is_dir():
        return set()
    return {p.name.removeprefix("dt=") for p in raw_events.glob("dt=*") if any(p.iterdir())}


def _extracted_days(data_dir: str) -> set[str]:
    """Days with a data-quality record: extract writes it last, after the examples.

    Read from the table's Delta log (its files live under dt=... folders), so
    a re-run that has nothing to extract starts no Spark session."""
    from training import resolve_snapshot

    path = Lake(data_dir).data_quality
    if not Path(path, "_delta_log").is_dir():
        return set()
    return {part.removeprefix("dt=") for file in resolve_snapshot(path).paths
            for part in Path(file).parts if part.startswith("dt=")}


def _train_args(config: PipelineConfig, model: str, out: Path) -> list[str]:
    first, last = config.train_days
    return [
        "--table", Lake(config.data_dir).examples, "--train-start", first, "--train-end", last,
        "--validation-date", config.validation_day, "--spec", config.spec, "--model", model,
        "--weighting", config.weighting, "--epochs", str(config.epochs), "--batch-size", str(config.batch_size),
        "--lr", str(config.lr), "--workers", str(config.workers), "--seed", str(config.seed), "--out", str(out),
        *[arg for name, value in config.model_params.get(model, {}).items()
          for arg in ("--set", f"model_params.{name}={json.dumps(value)}")],
    ]


def _trained(out: Path, args: list[str]) -> bool:
    """A finished run with the same arguments is reused."""
    record_path = out / "pipeline_train_args.json"
    return (out / "model.pt").is_file() and record_path.is_file() and json.loads(record_path.read_text()) == args


def _evaluation_inputs(config: PipelineConfig, args: list[str], models: list[Path]) -> dict[str, Any]:
    """What an evaluation's result depends on: its arguments, the models' bytes and the
    table version recorded for the test day (a re-extract of that day moves it)."""
    from evaluation.snapshot import recorded_version

    return {"args": args, "models": {str(m): file_sha256(m / "model.pt") for m in models},
            "table_version": recorded_version(Lake(config.data_dir).examples, config.test_day)}


def _published(config: PipelineConfig, candidate: Path) -> str | None:
    """The registry version the production alias points at, when it holds exactly this model."""
    from evaluation.registry import registry_settings, version_by_alias

    production = version_by_alias(registry_settings(config.data_dir))
    if production is None or production.tags.get("ple.model_sha256") != file_sha256(candidate / "model.pt"):
        return None
    return str(production.version)


def run(config: PipelineConfig) -> dict:
    lake = Lake(config.data_dir)
    timings: dict[str, float] = {}
    stages: dict[str, str] = {}  # stage -> "ran" | "reused"
    outputs: dict[str, str] = {}

    def timed(stage: str, started: float, reused: bool) -> None:
        timings[stage] = round(time.perf_counter() - started, 1)
        stages[stage] = "reused" if reused else "ran"
        print(f"--- {stage} {'reused' if reused else 'took'} {timings[stage]:.1f} s", flush=True)

    # 1. raw logs
    started = time.perf_counter()
    _banner(1, "generate", f"{config.days} days of raw logs from {config.day(0)}")
    missing = sorted(set(config.all_days) - _generated_days(Path(lake.raw, "events")))
    reused = not (missing or config.force)
    if not reused:
        _call("generate", [
            "--data-dir", config.data_dir, "--start-date", config.day(0), "--days", str(config.days),
            "--users", str(config.users), "--items", str(config.items),
            "--impressions-per-day", str(config.impressions_per_day), "--fault-rate", str(config.fault_rate),
            "--seed", str(config.seed), "--overwrite",
        ])
    else:
        print(f"raw logs for all {config.days} days already under {lake.raw}: reused")
    timed("generate", started, reused)

    # 2. examples
    started = time.perf_counter()
    _banner(2, "extract", f"{config.days} days into {lake.examples}")
    done = set() if config.force else _extracted_days(config.data_dir)
    to_extract = [d for d in config.all_days if d not in done]
    for day in to_extract:
        _call("extract", ["--date", day, "--data-dir", config.data_dir])
    if not to_extract:
        print("every day already extracted: reused")
    timed("extract", started, not to_extract)

    # 3. models
    runs = Path(lake.runs, "pipeline")
    for model in config.models:
        started = time.perf_counter()
        out = runs / model
        args = _train_args(config, model, out)
        _banner(3, "train", f"{model} with {config.workers} Horovod worker(s) -> {out}")
        reused = _trained(out, args) and not config.force
        if reused:
            print(f"{model}: a finished run with these settings exists: reused")
        else:
            _call("train", args)
            write_json(out / "pipeline_train_args.json", args)
        timed(f"train {model}", started, reused)
        outputs[f"run {model}"] = str(out)

    # 4. evaluation on the test day
    started = time.perf_counter()
    candidate = runs / config.publish_model
    report_dir = Path(lake.reports, "pipeline", config.test_day)
    _banner(4, "evaluate", f"{config.publish_model} on the test day {config.test_day}")
    evaluate_args = ["--model", str(candidate), "--date", config.test_day, "--data-dir", config.data_dir,
                     "--out", str(report_dir)]
    if "single_task" in config.models and config.publish_model != "single_task":
        evaluate_args += ["--single-task-runs", str(runs / "single_task")]
    others = [str(runs / m) for m in config.models if m not in (config.publish_model, "single_task")]
    if others:
        evaluate_args += ["--compare", *others]
    inputs = _evaluation_inputs(config, evaluate_args, [runs / m for m in config.models])
    inputs_path = report_dir / "pipeline_evaluation_inputs.json"
    reused = (not config.force and (report_dir / "report.html").is_file() and inputs_path.is_file()
              and json.loads(inputs_path.read_text()) == json.loads(json.dumps(inputs)))
    if reused:
        print(f"the report of these models on {config.test_day} (table version {inputs['table_version']}) "
              "exists: reused")
    else:
        _call("evaluate", evaluate_args)
        write_json(inputs_path, inputs)
    outputs["report"] = str(report_dir / "report.html")
    outputs["metrics"] = str(report_dir / "metrics.json")
    timed("evaluate", started, reused)

    # 5. publish behind the gate
    started = time.perf_counter()
    _banner(5, "publish", f"{config.publish_model} behind the quality gate")
    version = None if config.force else _published(config, candidate)
    if version is not None:
        print(f"{config.publish_model} is already production (version {version}): reused")
    else:
        _call("publish", ["--model", str(candidate), "--date", config.test_day, "--data-dir", config.data_dir])
    outputs["registry"] = str(Path(lake.registry))
    timed("publish", started, version is not None)

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
    print(f"registry:        {record['outputs']['registry']} (MLflow, model `ple_video`, alias `production`)")
    print(f"pipeline record: {Path(config.data_dir, 'pipeline_record.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
