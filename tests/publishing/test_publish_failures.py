"""`ple publish` killed between registering the uploaded bundle and moving the alias: the registry
stays consistent (the alias never sees the new version, the bundle is complete) and a re-run
completes that publish instead of registering a duplicate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from model_registry.bundle import verify_bundle
from model_registry.registry import client, download_version, list_versions, registry_settings, version_by_alias
from evaluation_tables import DATES
from jobs.publish import main as publish_main

REPO_ROOT = Path(__file__).resolve().parents[2]
# `ple publish`, SIGKILLed by itself at the moment it would move the alias (after the upload and registration).
KILLED_AT_ALIAS_MOVE = """
import os, signal, sys
import publishing.publish
publishing.publish.move_alias = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
from jobs.publish import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_publish_killed_before_the_alias_move_is_completed_by_a_rerun(lake_root, trained_models, tmp_path,
                                                                       subprocess_env, capsys):
    settings = registry_settings(str(tmp_path))
    args = ["--model", str(trained_models["ple"]), "--date", DATES[1], "--data-dir", str(tmp_path),
            "--table", str(lake_root / "lake" / "examples"), "--onnx-exporter", "torchscript"]
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_ALIAS_MOVE, *args, "--lease-ttl-s", "600"],
                            cwd=REPO_ROOT, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    # Consistent: v1 registered with a complete bundle, no alias on it; the dead publisher's lease ticket is left.
    assert [str(v.version) for v in list_versions(settings)] == ["1"]
    assert version_by_alias(settings) is None
    assert verify_bundle(download_version(settings, settings.model_name, "1", tmp_path / "v1")) == []
    tickets = client(settings).search_model_versions(f"name='{settings.lease_name}'")
    assert len(tickets) == 1

    # The re-run waits out the dead ticket (its TTL, by the re-run's clock), then moves the alias to v1.
    capsys.readouterr()
    assert publish_main([*args, "--lease-ttl-s", "2", "--out", str(tmp_path / "records")]) == 0
    assert "completed the interrupted publish of ple_video v1 and moved @production" in capsys.readouterr().out
    assert str(version_by_alias(settings).version) == "1"
    assert [str(v.version) for v in list_versions(settings)] == ["1"]   # no duplicate
    (record_path,) = (tmp_path / "records").glob("publish-*-published.json")
    record = json.loads(record_path.read_text())
    assert record["completes_interrupted_publish"] == "1"
    assert [e["ticket"] for e in record["lock"]["expired"]] == [int(tickets[0].version)]
    assert client(settings).search_model_versions(f"name='{settings.lease_name}'") == []
