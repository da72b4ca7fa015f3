"""The one place that builds the SparkSession for every job and test.

Defaults suit a laptop or a 2-core CI box (local master, Delta extensions, the
Delta jars fetched by `make setup`, few shuffle partitions, UTC). Every default is
only *set if missing*, so `spark-submit --master yarn --conf k=v jobs/extract.py`
or `PLE_SPARK_MASTER=spark://host:7077` win over it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

DELTA_VERSION = "3.3.2"
DELTA_JAR_NAMES = (f"delta-spark_2.12-{DELTA_VERSION}.jar", f"delta-storage-{DELTA_VERSION}.jar")

LOCAL_DEFAULTS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Days are UTC days everywhere in the pipeline; never the machine's zone.
    "spark.sql.session.timeZone": "UTC",
    # A handful of partitions beats the default 200 on small local data.
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.driver.memory": "4g",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
    # Delta: small local tables need no parallel snapshot reconstruction.
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    "spark.driver.extraJavaOptions": (
        f"-Dlog4j2.configurationFile=file:{Path(__file__).with_name('log4j2.properties')} "
        "-Dderby.system.home=/tmp/derby"
    ),
}


class SparkSetupError(RuntimeError):
    """Spark cannot be started as configured; the message says what to fix."""


def cache_dir() -> Path:
    return Path(os.environ.get("PLE_CACHE_DIR", Path.home() / ".cache" / "ple-pipeline"))


def delta_jars() -> list[str]:
    """Paths of the Delta Lake jars: $PLE_DELTA_JARS (comma-separated) or the set-up cache."""
    if os.environ.get("PLE_DELTA_JARS"):
        jars = [j for j in os.environ["PLE_DELTA_JARS"].split(",") if j]
    else:
        jars = sorted(glob.glob(str(cache_dir() / "jars" / f"delta-{DELTA_VERSION}" / "*.jar")))
    missing = [name for name in DELTA_JAR_NAMES if not any(Path(j).name == name for j in jars)]
    absent = [j for j in jars if not Path(j).is_file()]
    if missing or absent:
        raise SparkSetupError(
            f"Delta Lake jars not found: {', '.join(missing or absent)} "
            f"(looked in {cache_dir() / 'jars' / f'delta-{DELTA_VERSION}'} and $PLE_DELTA_JARS). "
            "Run `make setup` to fetch them from Maven Central, or pass "
            f"--packages io.delta:delta-spark_2.12:{DELTA_VERSION} to spark-submit."
        )
    return jars


def _jar_hint() -> list[str]:
    try:
        return delta_jars()
    except SparkSetupError:
        return [str(cache_dir() / "jars" / f"delta-{DELTA_VERSION}" / name) for name in DELTA_JAR_NAMES]


def _jars_already_configured(conf) -> bool:
    """True when spark-submit (or the user) already brings Delta's classes."""
    for key in ("spark.jars", "spark.jars.packages"):
        if "delta" in (conf.get(key, "") or ""):
            return True
    return False


def get_spark(app_name: str = "ple", extra_conf: dict[str, str] | None = None):
    """Return the active SparkSession or build one with the project's defaults.

    Precedence, highest first: `extra_conf`, options given to spark-submit /
    spark-defaults, environment (PLE_SPARK_MASTER), the defaults above.
    """
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active

    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit the JVM is already up: connect first, so SparkConf()
        # loads its --master/--conf/--jars instead of starting empty (our local
        # defaults would otherwise override a cluster's master).
        from pyspark import SparkContext

        SparkContext._ensure_initialized()
    conf = SparkConf()
    conf.setIfMissing("spark.app.name", app_name)
    conf.setIfMissing("spark.master", os.environ.get("PLE_SPARK_MASTER", "local[2]"))
    for key, value in LOCAL_DEFAULTS.items():
        conf.setIfMissing(key, value)
    if not _jars_already_configured(conf):
        if "PYSPARK_GATEWAY_PORT" in os.environ:
            # Under spark-submit the driver JVM is already running: jars set now
            # would reach executors but not the driver's SQL extensions.
            raise SparkSetupError(
                "Delta Lake's jars must be given to spark-submit itself: add "
                f"--packages io.delta:delta-spark_2.12:{DELTA_VERSION} (resolved from ~/.m2 after `make setup`) "
                f"or --jars {','.join(_jar_hint())}"
            )
        conf.set("spark.jars", ",".join(filter(None, [conf.get("spark.jars", ""), *delta_jars()])))
    for key, value in (extra_conf or {}).items():
        conf.set(key, str(value))

    os.environ.setdefault("PYSPARK_PYTHON", _python())
    if conf.get("spark.master").startswith("local"):
        # Local runs stay on loopback (and skip the "resolves to a loopback
        # address" warning on machines whose hostname does).
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("PLE_SPARK_LOG_LEVEL", "WARN"))
    return spark


def _python() -> str:
    import sys

    return sys.executable
