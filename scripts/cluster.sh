#!/usr/bin/env bash
# A local cluster of real servers on 127.0.0.1, for running the jobs the way they
# run on a real cluster (docs/CLUSTER.md):
#
#   scripts/cluster.sh up       # start everything (or check that it is already up)
#   scripts/cluster.sh status   # what runs where; exit 0 only when every part is up
#   scripts/cluster.sh down     # stop every process it started (state and logs stay)
#   scripts/cluster.sh purge    # down, then delete the state folder
#
# Parts:
#   - Spark standalone: a master and two workers (1 core, $PLE_CLUSTER_WORKER_MEMORY
#     each), started from the pinned pyspark's own bin/spark-class;
#   - S3-compatible object storage: s3proxy (filesystem backend) serving bucket
#     $PLE_CLUSTER_BUCKET (default `ple`) for raw logs, the lake, runs and artifacts;
#   - an MLflow tracking server: SQLite backend store, artifacts on the object
#     storage (s3://<bucket>/mlflow), proxied by the server (--serve-artifacts).
#
# State lives in $PLE_CLUSTER_DIR (default ${TMPDIR:-/tmp}/ple-cluster-$USER):
#   cluster.env        `source` it: master URL, endpoints and credentials (mode 600)
#   spark-conf/        SPARK_CONF_DIR: spark-defaults.conf for spark-submit (no secrets)
#   logs/<part>.log    every server's output, kept after `down` for post-mortems
#   pids/<part>.pid    one process group per server; `down` ends each group
#   s3/ mlflow/ work/  object store data, registry database, Spark worker dirs
# Credentials: random ones generated once per state folder and kept in cluster.env
# (never the caller's own AWS keys). They reach the servers through their
# environment or a mode-600 file, never a command line or a log.
# Jars come from `scripts/setup.sh jars` (Maven Central, cached).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${PLE_CLUSTER_DIR:-${TMPDIR:-/tmp}/ple-cluster-$(id -un)}
VENV=${PLE_VENV:-$ROOT/.venv}
CACHE_DIR=${PLE_CACHE_DIR:-$HOME/.cache/ple-pipeline}
BUCKET=${PLE_CLUSTER_BUCKET:-ple}
WORKERS=${PLE_CLUSTER_WORKERS:-2}
WORKER_MEMORY=${PLE_CLUSTER_WORKER_MEMORY:-1g}
START_TIMEOUT=${PLE_CLUSTER_START_TIMEOUT:-120}
DELTA_VERSION=3.3.2
HADOOP_VERSION=3.3.4
AWS_SDK_BUNDLE_VERSION=1.12.262
S3PROXY_VERSION=4.1.0

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

PY="$VENV/bin/python"
jar() { printf '%s' "$CACHE_DIR/jars/$1"; }  # a jar fetched by set-up
JARS=("delta-$DELTA_VERSION/delta-spark_2.12-$DELTA_VERSION.jar" "delta-$DELTA_VERSION/delta-storage-$DELTA_VERSION.jar"
      "s3a-hadoop-$HADOOP_VERSION/hadoop-aws-$HADOOP_VERSION.jar"
      "s3a-hadoop-$HADOOP_VERSION/aws-java-sdk-bundle-$AWS_SDK_BUNDLE_VERSION.jar"
      "s3proxy-$S3PROXY_VERSION/s3proxy-$S3PROXY_VERSION-jar-with-dependencies.jar")
require_jars() {
    local name
    for name in "${JARS[@]}"; do
        [[ -s "$(jar "$name")" ]] || die "missing $(jar "$name"): run \`scripts/setup.sh jars\` (fetches it from Maven Central)"
    done
}

# --- process bookkeeping ------------------------------------------------------------
pid_of() { cat "$STATE/pids/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }
parts() { local f; for f in "$STATE"/pids/*.pid; do [[ -e "$f" ]] && basename "$f" .pid; done; return 0; }

start() {  # start NAME CMD...: in its own session/process group, output appended to logs/NAME.log
    local name=$1; shift
    printf '=== %s: starting %s\n' "$(date -Is)" "$name" >>"$STATE/logs/$name.log"
    setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/pids/$name.pid"
}

wait_until() {  # wait_until NAME CHECK...: poll CHECK while NAME lives, up to START_TIMEOUT
    local name=$1; shift
    local deadline=$(( $(date +%s) + START_TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        if ! alive "$name"; then
            tail -n 40 "$STATE/logs/$name.log" >&2 || true
            stop_all
            die "$name exited during start-up (log above; full log: $STATE/logs/$name.log)"
        fi
        if (( $(date +%s) > deadline )); then
            tail -n 40 "$STATE/logs/$name.log" >&2 || true
            stop_all
            die "$name not ready after ${START_TIMEOUT}s (log above; full log: $STATE/logs/$name.log)"
        fi
        sleep 0.3
    done
}

http_ok() { "$PY" - "$1" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
}

workers_registered() { "$PY" - "$1" "$2" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    state = json.load(response)
sys.exit(0 if state.get("aliveworkers", 0) >= int(sys.argv[2]) else 1)
PY
}

bucket_ready() { "$PY" - <<'PY'
# Answers the S3 API with the credentials, and the bucket exists (created once).
import os
import boto3
s3 = boto3.client("s3")
bucket = os.environ["PLE_CLUSTER_BUCKET"]
if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
    s3.create_bucket(Bucket=bucket)
PY
}

signal_group() { local pid; pid=$(pid_of "$2"); [[ -z "$pid" ]] || kill "-$1" -- "-$pid" 2>/dev/null || true; }
group_alive() { local pid; pid=$(pid_of "$1"); [[ -n "$pid" ]] && kill -0 -- "-$pid" 2>/dev/null; }

stop_groups() {  # TERM the parts' process groups, wait, then KILL what is left after the grace period
    local name waited=0
    for name in "$@"; do signal_group TERM "$name"; done
    while :; do
        local left=()
        for name in "$@"; do group_alive "$name" && left+=("$name"); done
        (( ${#left[@]} )) || break
        if (( waited >= 100 )); then
            log "${left[*]} did not stop within 20 s: killing their process groups"
            for name in "${left[@]}"; do signal_group KILL "$name"; done
            sleep 0.5
            break
        fi
        sleep 0.2
        waited=$(( waited + 1 ))
    done
    for name in "$@"; do rm -f "$STATE/pids/$name.pid"; done
}

descendants() {  # every process below pid $1 (executors, Python workers, uvicorn, ...)
    ps -eo pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = p; while ((q in parent) && q != root && q > 1) q = parent[q]; if (q == root && p != root) print p } }'
}

stop_all() {
    # Processes that leave their group (pyspark's daemon calls setpgid) are found
    # now, while their parents still live, and ended after the groups.
    local name stragglers=()
    for name in $(parts); do
        local pid
        pid=$(pid_of "$name")
        [[ -n "$pid" ]] && mapfile -t -O "${#stragglers[@]}" stragglers < <(descendants "$pid")
    done
    # Workers first (they end their executors), then everything else.
    local workers rest
    mapfile -t workers < <(parts | grep '^spark-worker' || true)
    (( ${#workers[@]} )) && stop_groups "${workers[@]}"
    mapfile -t rest < <(parts)
    (( ${#rest[@]} )) && stop_groups "${rest[@]}"
    local pid left=()
    for pid in "${stragglers[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    if (( ${#left[@]} )); then
        kill -TERM "${left[@]}" 2>/dev/null || true
        sleep 1
        for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    return 0
}

# --- configuration ------------------------------------------------------------------
free_ports() { "$PY" - "$1" <<'PY'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
PY
}

write_config() {
    local ports
    read -r -a ports <<<"$(free_ports $((5 + 2 * WORKERS)))"
    MASTER_PORT=${ports[0]} MASTER_UI_PORT=${ports[1]} S3_PORT=${ports[2]} MLFLOW_PORT=${ports[3]}
    WORKER_PORTS=("${ports[@]:5}")

    # Credentials of this cluster alone, generated once per state folder (never the
    # caller's own AWS keys: they would be copied into the S3 server's config).
    local key secret
    if [[ -f "$STATE/cluster.env" ]] && grep -q AWS_SECRET_ACCESS_KEY "$STATE/cluster.env"; then
        key=$(sed -n 's/^export AWS_ACCESS_KEY_ID=//p' "$STATE/cluster.env")
        secret=$(sed -n 's/^export AWS_SECRET_ACCESS_KEY=//p' "$STATE/cluster.env")
    else
        key="ple$("$PY" -c 'import secrets; print(secrets.token_hex(8))')"
        secret=$("$PY" -c 'import secrets; print(secrets.token_hex(20))')
    fi

    local delta_jars s3a_jars spark_home
    spark_home=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
    delta_jars="$(jar "delta-$DELTA_VERSION/delta-spark_2.12-$DELTA_VERSION.jar"),$(jar "delta-$DELTA_VERSION/delta-storage-$DELTA_VERSION.jar")"
    s3a_jars="$(jar "s3a-hadoop-$HADOOP_VERSION/hadoop-aws-$HADOOP_VERSION.jar"):$(jar "s3a-hadoop-$HADOOP_VERSION/aws-java-sdk-bundle-$AWS_SDK_BUNDLE_VERSION.jar")"

    mkdir -p "$STATE/spark-conf"
    # What spark-submit needs before the driver JVM starts (classpath, Delta jars);
    # object-storage settings come from the environment in ple_runtime/spark.py.
    cat >"$STATE/spark-conf/spark-defaults.conf" <<EOF
spark.master                    spark://127.0.0.1:$MASTER_PORT
spark.jars                      $delta_jars
spark.driver.extraClassPath     $s3a_jars
spark.executor.extraClassPath   $s3a_jars
spark.pyspark.python            $PY
spark.driver.host               127.0.0.1
spark.driver.extraJavaOptions   -Dlog4j2.configurationFile=file:$ROOT/ple_runtime/log4j2.properties
EOF
    (umask 077; cat >"$STATE/cluster.env" <<EOF
# source this file to point the jobs at the local cluster (scripts/cluster.sh)
export PLE_CLUSTER_DIR=$STATE
export PLE_SPARK_MASTER=spark://127.0.0.1:$MASTER_PORT
export SPARK_CONF_DIR=$STATE/spark-conf
# the environment's own spark-submit works from a fresh shell (no activated venv)
export SPARK_HOME=$spark_home
# drivers listen on loopback too, like every part of this cluster
export SPARK_LOCAL_IP=127.0.0.1
export PLE_CLUSTER_MASTER_UI=http://127.0.0.1:$MASTER_UI_PORT
export PLE_CLUSTER_BUCKET=$BUCKET
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
EOF
    )
    (umask 077; cat >"$STATE/s3proxy.properties" <<EOF
s3proxy.endpoint=http://127.0.0.1:$S3_PORT
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$key
s3proxy.credential=$secret
jclouds.provider=filesystem
jclouds.filesystem.basedir=$STATE/s3
EOF
    )
    printf '%s\n' "${WORKER_PORTS[@]}" >"$STATE/worker-ports"
}

# --- commands -----------------------------------------------------------------------
cmd_up() {
    [[ -x "$PY" ]] || die "no Python environment at $VENV: run \`make setup\` or set PLE_VENV"
    command -v java >/dev/null || die "java not found: install OpenJDK 17 (see README Requirements)"
    require_jars
    mkdir -p "$STATE"/{logs,pids,s3,mlflow,work}
    if [[ -n "$(parts)" ]]; then
        if cmd_status >/dev/null 2>&1; then
            log "already up ($STATE)"
            return 0
        fi
        log "a previous cluster in $STATE is partly up: stopping it first"
        stop_all
    fi
    local t0 t
    t0=$(now)
    write_config
    # shellcheck disable=SC1091
    source "$STATE/cluster.env"
    # Executors (started by the workers) inherit this environment: credentials,
    # endpoint, the Python of the environment and its import path.
    export SPARK_LOCAL_IP=127.0.0.1 SPARK_DAEMON_MEMORY=${PLE_CLUSTER_DAEMON_MEMORY:-512m}
    export PYSPARK_PYTHON=$PY
    export SPARK_CONF_DIR=$STATE/spark-conf

    t=$(now)
    start s3proxy java -Xmx256m -jar "$(jar "s3proxy-$S3PROXY_VERSION/s3proxy-$S3PROXY_VERSION-jar-with-dependencies.jar")" \
        --properties "$STATE/s3proxy.properties"
    start spark-master "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
        --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$MASTER_UI_PORT"
    local i worker_ports
    mapfile -t worker_ports <"$STATE/worker-ports"
    for i in $(seq 1 "$WORKERS"); do
        start "spark-worker-$i" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
            --host 127.0.0.1 --port "${worker_ports[$(( 2 * i - 2 ))]}" --webui-port "${worker_ports[$(( 2 * i - 1 ))]}" \
            --cores 1 --memory "$WORKER_MEMORY" --work-dir "$STATE/work/worker-$i" "spark://127.0.0.1:$MASTER_PORT"
    done

    # The registry needs no background job runner (GenAI evaluation jobs): without
    # it the server is one process instead of nine.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false start mlflow "$VENV/bin/mlflow" server \
        --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
        --artifacts-destination "s3://$BUCKET/mlflow" \
        --host 127.0.0.1 --port "${MLFLOW_TRACKING_URI##*:}" --workers 1

    wait_until s3proxy bucket_ready
    log "object storage up: $AWS_ENDPOINT_URL, bucket s3://$BUCKET ($(since "$t") s)"
    wait_until spark-master workers_registered "$PLE_CLUSTER_MASTER_UI/json" "$WORKERS"
    log "Spark standalone up: $PLE_SPARK_MASTER with $WORKERS workers ($(since "$t") s)"
    wait_until mlflow http_ok "$MLFLOW_TRACKING_URI/health"
    log "MLflow tracking server up: $MLFLOW_TRACKING_URI ($(since "$t") s)"
    log "cluster up in $(since "$t0") s; point the jobs at it with: source $STATE/cluster.env"
}

cmd_status() {
    [[ -f "$STATE/cluster.env" ]] || { echo "no cluster state in $STATE"; return 3; }
    local name ok=0 expected=(s3proxy spark-master mlflow)
    local i
    for i in $(seq 1 "$WORKERS"); do expected+=("spark-worker-$i"); done
    for name in "${expected[@]}"; do
        if alive "$name"; then
            echo "$name: running (pid $(pid_of "$name"))"
        else
            echo "$name: not running"
            ok=1
        fi
    done
    # Endpoints, without the credentials.
    grep -E '^export (PLE_SPARK_MASTER|PLE_CLUSTER_MASTER_UI|AWS_ENDPOINT_URL|MLFLOW_TRACKING_URI|PLE_CLUSTER_BUCKET)=' \
        "$STATE/cluster.env" | sed 's/^export //'
    echo "state: $STATE (source $STATE/cluster.env)"
    return $ok
}

cmd_down() {
    if [[ -z "$(parts)" ]]; then
        log "nothing running in $STATE"
        return 0
    fi
    local t0
    t0=$(now)
    stop_all
    log "cluster down in $(since "$t0") s (logs kept in $STATE/logs)"
}

cmd_purge() {
    cmd_down
    [[ -d "$STATE" ]] && rm -rf "$STATE"
    log "removed $STATE"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    purge) cmd_purge ;;
    *) die "usage: scripts/cluster.sh up|down|status|purge (state: \$PLE_CLUSTER_DIR, now $STATE)" ;;
esac
