"""Health checks for every component of the stack, each with the fix to apply.

Each check runs in isolation (a broken torch must not hide a working Spark) and
returns a `Check`: ok, a detail line, and the fix when it is not ok. Checks that
are informative only (a GPU on a CPU machine) never fail the doctor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Check:
    component: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_java() -> Check:
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) if os.environ.get("JAVA_HOME") \
        else shutil.which("java")
    if not java:
        return Check("Java", False, "java not found", "install OpenJDK 17 (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME")
    # The version line, not the first: JDK_JAVA_OPTIONS / JAVA_TOOL_OPTIONS print a note before it.
    out = [line for line in _run([java, "-version"]).stderr.splitlines() if " version " in line]
    version = out[0] if out else "?"
    major_ok = any(f'"{v}' in version for v in ("17", "11", "21"))
    return Check("Java", major_ok, f"{version} ({java})",
                 "" if major_ok else "Spark 3.5 needs Java 11, 17 or 21; install OpenJDK 17 and set JAVA_HOME")


def check_spark_and_delta() -> list[Check]:
    try:
        import pyspark

        from ple_runtime.spark import delta_jars, get_spark
    except Exception as err:  # noqa: BLE001 (report any import failure)
        return [Check("Spark", False, f"import failed: {err}", "run `make setup`")]
    checks = []
    try:
        jars = delta_jars()
        checks.append(Check("Delta jars", True, ", ".join(Path(j).name for j in jars)))
    except Exception as err:  # noqa: BLE001
        return [Check("Spark", True, f"pyspark {pyspark.__version__}"), Check("Delta jars", False, str(err), "run `make setup`")]
    try:
        spark = get_spark("ple-doctor")
        checks.insert(0, Check("Spark", True, f"pyspark {pyspark.__version__}, master {spark.sparkContext.master}"))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "doctor_delta")
            spark.range(10).write.format("delta").save(path)
            spark.range(10, 15).write.format("delta").mode("append").save(path)
            from delta.tables import DeltaTable

            version = DeltaTable.forPath(spark, path).history(1).collect()[0]["version"]
            count_v0 = spark.read.format("delta").option("versionAsOf", 0).load(path).count()
            ok = version == 1 and count_v0 == 10
            checks.append(Check("Delta Lake", ok, f"wrote a table, version {version}, time travel to v0 read {count_v0} rows",
                                "" if ok else "Delta behaves unexpectedly; check the jars' version matches delta-spark"))
    except Exception as err:  # noqa: BLE001
        checks.append(Check("Delta Lake", False, f"{type(err).__name__}: {str(err).splitlines()[0]}",
                            "run `make setup`; check JAVA_HOME and the Delta jars"))
    return checks


def check_petastorm() -> Check:
    try:
        import petastorm
        import pyarrow

        return Check("Petastorm", True, f"petastorm {petastorm.__version__} on pyarrow {pyarrow.__version__}")
    except Exception as err:  # noqa: BLE001
        return Check("Petastorm", False, f"import failed: {err}", "run `make setup` (installs petastorm --no-deps)")


def check_torch() -> Check:
    try:
        import torch

        return Check("PyTorch", True, f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    except Exception as err:  # noqa: BLE001
        return Check("PyTorch", False, f"import failed: {err}", "run `make setup`")


def check_horovod() -> Check:
    try:
        import horovod
        import horovod.torch as hvd

        frameworks = "PyTorch"  # importing horovod.torch succeeded, so its PyTorch extension is built
        controllers = [name for name, built in (("Gloo", hvd.gloo_built()), ("MPI", hvd.mpi_built())) if built]
        ops = [name for name, built in (("NCCL", hvd.nccl_built()), ("CUDA", hvd.cuda_built())) if built]
        ok = hvd.gloo_built() and shutil.which("horovodrun", path=str(Path(sys.executable).parent)) is not None
        return Check("Horovod", ok,
                     f"horovod {horovod.__version__}: frameworks {frameworks}; controllers {', '.join(controllers) or 'none'}; "
                     f"GPU ops {', '.join(ops) or 'none (CPU build)'}",
                     "" if ok else "rebuild horovod with Gloo: delete ~/.cache/ple-pipeline/wheels/horovod-* and run `make setup`")
    except Exception as err:  # noqa: BLE001
        return Check("Horovod", False, f"import failed: {err}",
                     "run `make setup` (builds horovod 0.28.1 with the C++17 patch)")


def check_gpu() -> Check:
    try:
        import torch

        if not torch.cuda.is_available():
            return Check("GPU/CUDA/NCCL", True, "no CUDA device: training runs on CPU with Gloo", required=False)
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else "?"
        return Check("GPU/CUDA/NCCL", True, f"{len(names)} x {names[0]}, CUDA {torch.version.cuda}, NCCL {nccl}",
                     required=False)
    except Exception as err:  # noqa: BLE001
        return Check("GPU/CUDA/NCCL", False, str(err), "check the NVIDIA driver", required=False)


def check_airflow() -> Check:
    venv = Path(os.environ.get("PLE_AIRFLOW_VENV", REPO_ROOT / ".venv-airflow"))
    python = venv / "bin" / "python"
    if not python.exists():
        return Check("Airflow", False, f"no Airflow environment at {venv}", "run `make setup` (scripts/setup.sh airflow)")
    # Installed versions only: `import airflow` would read the metadata database setting,
    # which Airflow 3 deliberately makes unusable inside a running task (ple_doctor DAG).
    probe = ("import importlib.metadata as m; "
             "print(m.version('apache-airflow'), m.version('apache-airflow-providers-apache-spark'))")
    result = _run([str(python), "-c", probe])
    if result.returncode != 0:
        return Check("Airflow", False, result.stderr.strip().splitlines()[-1], "run `make setup`")
    airflow_version, provider_version = result.stdout.split()
    return Check("Airflow", True, f"airflow {airflow_version}, spark provider {provider_version} ({venv})")


CHECKS: list[Callable[[], Check | list[Check]]] = [
    check_java, check_spark_and_delta, check_petastorm, check_torch, check_horovod, check_gpu, check_airflow,
]


def run_checks() -> list[Check]:
    results: list[Check] = []
    for check in CHECKS:
        try:
            outcome = check()
        except Exception as err:  # noqa: BLE001 (a check must never crash the doctor)
            outcome = Check(check.__name__.removeprefix("check_"), False, f"{type(err).__name__}: {err}")
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def format_table(results: list[Check]) -> str:
    width = max(len(c.component) for c in results)
    lines = [f"{'component':<{width}}  status  detail", f"{'-' * width}  ------  ------"]
    for c in results:
        status = "ok" if c.ok else ("FAIL" if c.required else "warn")
        lines.append(f"{c.component:<{width}}  {status:<6}  {c.detail}")
    fixes = [f"  {c.component}: {c.fix}" for c in results if not c.ok and c.fix]
    if fixes:
        lines += ["", "to fix:", *fixes]
    return "\n".join(lines)
