"""A small Spark application for the cluster checks, submitted with `spark-submit`:
Python tasks on the executors and a Parquet round trip through s3a://."""

from __future__ import annotations

import os
import sys

from ple_runtime.spark import get_spark

spark = get_spark("ple-cluster-check")
out = sys.argv[1]
python_workers = spark.sparkContext.parallelize(range(8), 8).map(lambda _: os.getpid()).distinct().count()
spark.range(0, 1000, numPartitions=4).selectExpr("id", "id % 7 AS k").write.mode("overwrite").parquet(out)
back = spark.read.parquet(out)
print(f"ROWS {back.count()} SUM {back.agg({'id': 'sum'}).collect()[0][0]} PYTHON_WORKERS {python_workers}")
print(f"APP {spark.sparkContext.applicationId}")
spark.stop()
