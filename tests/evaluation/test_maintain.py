"""`ple maintain` on a small real lake: compaction, VACUUM that keeps a registered model's pinned
version, and the clear error once a forced VACUUM deleted it."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation_tables import DATES, day_frame, write_days
from model_registry.registry import get_version, registry_settings
from jobs.evaluate import main as evaluate_main
from jobs.maintain import main as maintain_main
from jobs.publish import main as publish_main
from ple_runtime import delta_log


def _small_lake(spark, columns, root: Path) -> str:
    """Two days, each appended in three commits (several small files per partition), then the
    second day re-extracted (a replaceWhere commit: its earlier files become tombstones)."""
    table = str(root / "lake" / "examples")
    for index, date in enumerate(DATES[:2]):
        frame = day_frame(columns, index, date)
        for part in range(3):
            write_days(spark, table, [frame.iloc[part::3]])
    return table


def _report(root: Path) -> dict:
    reports = sorted((root / "reports" / "maintain").glob("*.json"))
    return json.loads(reports[-1].read_text())["tables"]["examples"]


def _evaluate(root: Path, table: str, date: str, *version) -> int:
    return evaluate_main(["--model", "models:/ple_video/1", "--date", date, "--data-dir", str(root), "--table", table,
                          "--no-with-production", "--out", str(root / "eval" / f"{date}-{len(version)}"), *version])


def test_maintain_keeps_pinned_versions_and_a_forced_vacuum_gives_a_clear_error(
        spark, examples_problem, trained_models, tmp_path, capsys):
    _, columns = examples_problem
    table = _small_lake(spark, columns, tmp_path)
    assert publish_main(["--model", str(trained_models["ple"]), "--date", DATES[1], "--data-dir", str(tmp_path),
                         "--table", table, "--onnx-exporter", "torchscript"]) == 0
    pinned = int(get_version(registry_settings(str(tmp_path)), "ple_video", 1).tags["ple.eval_table_version"])
    write_days(spark, table, [day_frame(columns, 2, DATES[1])], mode="overwrite", replace_date=DATES[1])
    assert delta_log.latest_version(table) > pinned
    capsys.readouterr()

    # Compaction + a zero-hour VACUUM: the pinned version's files must survive it.
    assert maintain_main(["--data-dir", str(tmp_path), "--tables", "examples", "--retention-hours", "0",
                          "--no-retention-check"]) == 0
    out = capsys.readouterr().out
    report = _report(tmp_path)
    assert report["before"]["files_per_partition"] > 1 and report["after"]["files_per_partition"] == 1
    assert report["compaction"]["files_removed"] > report["compaction"]["files_added"] == 2
    # Every file removed since the pinned version (the re-extract's and the compaction's) is kept.
    assert report["vacuum"]["retention_hours"] > 0 and report["vacuum"]["lost"] == []
    assert report["after"]["disk_files"] == report["before"]["disk_files"] + 2
    assert f"ple_video v1 (evaluation) pins v{pinned}" in out and "retention raised from 0 h" in out
    assert _evaluate(tmp_path, table, DATES[1], "--version", str(pinned)) == 0

    # Forced: the pinned version's files go; evaluating on it names the version and what to do.
    assert maintain_main(["--data-dir", str(tmp_path), "--tables", "examples", "--retention-hours", "0",
                          "--no-retention-check", "--force"]) == 0
    forced = _report(tmp_path)
    assert [lost["version"] for lost in forced["vacuum"]["lost"]] == [pinned]
    assert forced["after"]["disk_files"] == forced["after"]["live_files"] == 2
    assert forced["after"]["disk_bytes"] < forced["before"]["disk_bytes"]
    capsys.readouterr()
    assert _evaluate(tmp_path, table, DATES[1], "--version", str(pinned)) == 1
    err = capsys.readouterr().err
    assert f"version {pinned} of {table} (dt={DATES[1]}) can no longer be read: VACUUM deleted" in err
    assert f"was rewritten at v{pinned + 1}: --version {pinned + 1}" in err
    # A date read at its recorded version (compacted and vacuumed since) reads the same rows at the latest one.
    assert _evaluate(tmp_path, table, DATES[0]) == 0
    metrics = json.loads((tmp_path / "eval" / f"{DATES[0]}-0" / "metrics.json").read_text())
    assert metrics["snapshot"]["rows"] == len(day_frame(columns, 0, DATES[0]))
    assert metrics["snapshot"]["recorded_version"] < metrics["snapshot"]["version"]
