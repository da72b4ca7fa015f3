"""The one place that builds the SparkSession for every job and test.

Defaults suit a laptop or a 2-core CI box (local master, Delta extensions, the
Delta jars fetched by `make setup`, few shuffle partitions, UTC). Every default is
only *set if missing*, so `spark-submit --master yarn --conf k=v jobs/extract.py`
or `PLE_SPARK_MASTER=spark://host:7077` win over it.

Object storage (`s3a://`): hadoop-aws and the AWS SDK bundle (fetched by set-up)
go on the classpath when Spark is started from Python; the endpoint comes from
`AWS_ENDPOINT_URL` (the variable the AWS SDKs, boto3 and delta-rs read too), and
credentials from S3A's own chain (environment variables, instance profile, ...),
never from this module. See docs/CLUSTER.md.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ple_runtime.errors import StageError

DELTA_VERSION = "3.3.2"
DELTA_JAR_NAMES = (f"delta-spark_2.12-{DELTA_VERSION}.jar", f"delta-storage-{DELTA_VERSION}.jar")
# hadoop-aws must match pyspark's Hadoop; the SDK bundle is the one it was built against.
HADOOP_VERSION = "3.3.4"
S3A_JAR_NAMES = (f"hadoop-aws-{HADOOP_VERSION}.jar", "aws-java-sdk-bundle-1.12.262.jar")

LOCAL_DEFAULTS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Days are UTC days everywhere in the pipeline; never the machine's zone.
    "spark.sql.session.timeZone": "UTC",
    # A handful of partitions beats the default 200 on small local data.
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
    # Delta: small local tables need no parallel snapshot reconstruction.
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    # VACUUM lists the table in this many Spark tasks (Spark's default, 10,000, is meant for
    # huge tables: `ple maintain` of a small lake spent ~90 s in empty listing tasks).
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
    "spark.driver.extraJavaOptions": (
        f"-Dlog4j2.configurationFile=file:{Path(__file__).with_name('log4j2.properties')} "
        "-Dderby.system.home=/tmp/derby"
    ),
}


CLUSTER_DRIVER_MEMORY = "4g"


def local_driver_memory() -> str:
    """Driver heap for a local master, where the driver JVM is also the only executor:
    45% of the machine's memory, between 4g and 16g (10g on a 24 GiB machine). The rest
    is for Python workers, training and the OS. A 5M-event day of extract spills and runs
    ~3x slower with 4g (docs/DATA.md)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{min(16, max(4, int(total * 0.45 / 2**30)))}g"


def default_driver_memory(master: str) -> str:
    return local_driver_memory() if master.startswith("local") else CLUSTER_DRIVER_MEMORY


class SparkSetupError(StageError):
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


def s3a_jars() -> list[str]:
    """hadoop-aws + AWS SDK bundle from the set-up cache; [] when set-up has not fetched them."""
    folder = cache_dir() / "jars" / f"s3a-hadoop-{HADOOP_VERSION}"
    jars = [str(folder / name) for name in S3A_JAR_NAMES]
    return jars if all(Path(j).is_file() for j in jars) else []


def object_storage_conf(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Spark settings for s3a:// (and Delta's log store on it), from the environment.

    No credentials here: S3A reads them itself (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    fs.s3a.* in core-site.xml or an instance profile), so they never appear in a
    command line, a Spark conf dump or a log.
    """
    environ = os.environ if environ is None else environ
    conf = {
        # Delta's default for s3a:// already; explicit because its guarantee matters:
        # one writer (driver) per table at a time, see docs/CLUSTER.md.
        "spark.delta.logStore.s3a.impl": "io.delta.storage.S3SingleDriverLogStore",
        "spark.delta.logStore.s3.impl": "io.delta.storage.S3SingleDriverLogStore",
    }
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        # An S3-compatible server (s3proxy, MinIO, Ceph): path-style addressing, and
        # TLS only when the endpoint says https.
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    return conf


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
    # Only effective when this process starts the JVM (spark-submit sizes its own driver).
    conf.setIfMissing("spark.driver.memory", default_driver_memory(conf.get("spark.master")))
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
    for key, value in object_storage_conf().items():
        conf.setIfMissing(key, value)
    if "PYSPARK_GATEWAY_PORT" not in os.environ and s3a_jars():
        # On the classpath, not in spark.jars: executors on this machine read them in
        # place instead of each copying the 280 MB SDK bundle (a cluster brings its own).
        for key in ("spark.driver.extraClassPath", "spark.executor.extraClassPath"):
            conf.setIfMissing(key, os.pathsep.join(s3a_jars()))
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
