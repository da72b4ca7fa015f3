"""`ple-spark-submit`: pyspark's own `spark-submit`, usable from a fresh shell.

    .venv/bin/ple-spark-submit --master local[2] jobs/extract.py --date 2026-01-08
    .venv/bin/ple-spark-submit --master spark://host:7077 --driver-memory 8g jobs/extract.py ...

The `spark-submit` that pip installs next to pyspark only works inside an
activated environment: it finds SPARK_HOME, and runs the driver, with whatever
`python3` is first on PATH (the system one has no pyspark: "bin/spark-class: No
such file or directory"). This wrapper fills in what an activated environment
would (SPARK_HOME = this pyspark, the driver's and executors' Python = this
interpreter) and, unless the command brings them:
- the Delta Lake jars fetched by `make setup`;
- with a local master, the s3a jars set-up fetched (for s3a:// data);
- the driver memory (`ple_runtime.spark.default_driver_memory`: the driver JVM starts
  before the job's own session defaults could apply).
Everything given on the command line or already in the environment wins. Then it
execs spark-submit with the same arguments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _given(args: list[str], flag: str, conf_key: str) -> str | None:
    """The value of `--flag X`, `--flag=X` or `--conf key=X` in a spark-submit command, if any."""
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == "--conf" and index + 1 < len(args) and args[index + 1].startswith(conf_key + "="):
            return args[index + 1].split("=", 1)[1]
    return None


def _with_jars(args: list[str], jars: str) -> list[str]:
    """`args` with `jars` added to its --jars (spark-submit keeps only the last --jars given)."""
    for index, arg in enumerate(args):
        if arg == "--jars" and index + 1 < len(args):
            return [*args[:index + 1], f"{args[index + 1]},{jars}", *args[index + 2:]]
        if arg.startswith("--jars="):
            return [*args[:index], f"{arg},{jars}", *args[index + 1:]]
    return ["--jars", jars, *args]


def submit_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv for exec, environment) of the spark-submit call that `args` asks for."""
    import pyspark

    from ple_runtime.spark import default_driver_memory, delta_jars, s3a_jars

    spark_home = os.environ.get("SPARK_HOME") or str(Path(pyspark.__file__).parent)
    env = dict(os.environ)
    env["SPARK_HOME"] = spark_home
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", env["PYSPARK_PYTHON"])
    extra: list[str] = []
    brought = " ".join(filter(None, (_given(args, "--jars", "spark.jars"),
                                     _given(args, "--packages", "spark.jars.packages"))))
    if "delta" not in brought:
        jars = ",".join(delta_jars())  # raises with the fix (`make setup` or --packages) when missing
        args = _with_jars(args, jars)
    master = _given(args, "--master", "spark.master") or "local[*]"
    if master.startswith("local") and s3a_jars() and _given(args, "--driver-class-path",
                                                            "spark.driver.extraClassPath") is None:
        # s3a:// from a local master: the executors live in the driver JVM (a cluster brings its own).
        extra += ["--driver-class-path", os.pathsep.join(s3a_jars())]
    if _given(args, "--driver-memory", "spark.driver.memory") is None:
        # spark's own default (1g) is too small for a day of extract
        extra += ["--driver-memory", default_driver_memory(master)]
    return [str(Path(spark_home, "bin", "spark-submit")), *extra, *args], env


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    from ple_runtime.spark import SparkSetupError

    try:
        command, env = submit_command(args)
    except SparkSetupError as error:
        print(f"ple-spark-submit: {error}", file=sys.stderr)
        return 1
    os.execve(command[0], command, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
