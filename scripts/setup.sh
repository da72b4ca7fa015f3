#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine, idempotently.
#
#   scripts/setup.sh            # main env + Delta jars + horovod + Airflow env
#   scripts/setup.sh main       # only the main environment (no Airflow)
#   scripts/setup.sh airflow    # only the Airflow environment
#   scripts/setup.sh jars       # only the jars (Delta, s3a, s3proxy) from Maven Central
#
# Caches (reused across runs and checkouts, never inside the checkout):
#   $PLE_CACHE_DIR (default ~/.cache/ple-pipeline)
#     wheels/horovod-0.28.1+torch2.13.0-cp311-linux_x86_64/*.whl  (built once, ~2 min)
#     jars/delta-3.3.2/*.jar                                       (from Maven Central)
#     jars/s3a-hadoop-3.3.4/*.jar      hadoop-aws + AWS SDK bundle (Spark's s3a://)
#     jars/s3proxy-4.1.0/*.jar         the local S3 server of scripts/cluster.sh
#   ~/.cache/pip (pip's own download cache)
# A stamp per environment records a hash of the inputs (pyproject.toml, this
# script), so a second run returns in seconds and a changed pin re-installs.
# Why each step looks the way it does: ../shared/STACK.md and docs/ENVIRONMENT.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

PYTHON=${PLE_PYTHON:-python3.11}
CACHE_DIR=${PLE_CACHE_DIR:-$HOME/.cache/ple-pipeline}
VENV=${PLE_VENV:-$ROOT/.venv}
AIRFLOW_VENV=${PLE_AIRFLOW_VENV:-$ROOT/.venv-airflow}

TORCH_VERSION=2.13.0
HOROVOD_VERSION=0.28.1
PETASTORM_VERSION=0.13.1
DELTA_VERSION=3.3.2
# s3a:// for Spark: hadoop-aws must match pyspark's Hadoop (3.3.4), and the AWS SDK
# bundle is the one hadoop-aws 3.3.4 was built against (hadoop-project pom).
HADOOP_VERSION=3.3.4
AWS_SDK_BUNDLE_VERSION=1.12.262
S3PROXY_VERSION=4.1.0
AIRFLOW_VERSION=3.3.2
AIRFLOW_SPARK_PROVIDER_VERSION=6.3.4

log() { printf '\033[1m[setup %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\033[31m[setup] ERROR: %s\033[0m\n' "$*" >&2; exit 1; }

inputs_hash() {
    cat pyproject.toml scripts/setup.sh "$@" 2>/dev/null | sha256sum | cut -c1-16
}

check_prereqs() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found. Install CPython 3.11 (or set PLE_PYTHON to one)."
    command -v java >/dev/null || die "java not found. Install OpenJDK 17 (Debian: apt-get install openjdk-17-jdk-headless) and set JAVA_HOME."
    command -v mvn >/dev/null || die "mvn not found; it fetches the Delta Lake jars from Maven Central. Install Maven (Debian: apt-get install maven)."
    command -v cmake >/dev/null || die "cmake not found; horovod is built from source. Install cmake (Debian: apt-get install cmake)."
    command -v g++ >/dev/null || die "g++ not found; horovod is built from source. Install g++ (Debian: apt-get install g++)."
}

# --- jars from Maven Central ------------------------------------------------------
# One folder per group of artifacts; a `.complete` stamp is written only after every
# jar is present, so an interrupted fetch is redone, not half-trusted.
fetch_jars() {
    local dir="$1"; shift
    if [[ -f "$dir/.complete" ]]; then
        log "jars cached in $dir"
        return
    fi
    log "fetching $* from Maven Central into $dir"
    mkdir -p "$dir"
    local artifact
    for artifact in "$@"; do
        mvn -q -B -Dstyle.color=never org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
            -Dartifact="$artifact" -DoutputDirectory="$dir" \
            || die "Maven could not fetch $artifact into $dir. Check that Maven Central is reachable."
        local gav
        IFS=: read -r -a gav <<<"$artifact"
        local expected="${gav[1]}-${gav[2]}${gav[4]:+-${gav[4]}}.jar"
        [[ -s "$dir/$expected" ]] || die "$expected missing from $dir after the Maven fetch of $artifact"
    done
    touch "$dir/.complete"
}

# Delta Lake's JVM side is not on PyPI.
fetch_delta_jars() {
    fetch_jars "$CACHE_DIR/jars/delta-$DELTA_VERSION" \
        "io.delta:delta-spark_2.12:$DELTA_VERSION:jar" "io.delta:delta-storage:$DELTA_VERSION:jar"
}

# s3a:// for Spark, and the S3 server of scripts/cluster.sh.
fetch_cluster_jars() {
    fetch_jars "$CACHE_DIR/jars/s3a-hadoop-$HADOOP_VERSION" \
        "org.apache.hadoop:hadoop-aws:$HADOOP_VERSION:jar" \
        "com.amazonaws:aws-java-sdk-bundle:$AWS_SDK_BUNDLE_VERSION:jar"
    fetch_jars "$CACHE_DIR/jars/s3proxy-$S3PROXY_VERSION" \
        "org.gaul:s3proxy:$S3PROXY_VERSION:jar:jar-with-dependencies"
}

# --- horovod: sdist + C++17 patch, built once and cached as a wheel ----------
horovod_wheel() {
    local py_tag wheel_dir flavour="cpu" gpu_env=()
    py_tag=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    # On a machine with an NVIDIA GPU and the CUDA toolkit, build NCCL GPU
    # operations too, against the NCCL that torch's wheel brings.
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && [[ "${PLE_HOROVOD_GPU:-auto}" != "0" ]]; then
        if command -v nvcc >/dev/null; then
            local nccl_home
            nccl_home=$("$VENV/bin/python" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null || true)
            flavour="nccl"
            gpu_env=(HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_CUDA_HOME="$(dirname "$(dirname "$(command -v nvcc)")")")
            [[ -n "$nccl_home" ]] && gpu_env+=(HOROVOD_NCCL_HOME="$nccl_home" HOROVOD_NCCL_LINK=SHARED)
        else
            log "WARNING: GPU found but no nvcc (CUDA toolkit): horovod is built for CPU (Gloo) only; install the CUDA toolkit for NCCL"
        fi
    fi
    wheel_dir="$CACHE_DIR/wheels/horovod-$HOROVOD_VERSION+torch$TORCH_VERSION-$py_tag-$(uname -m)-$flavour"
    if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
        log "building horovod $HOROVOD_VERSION against torch $TORCH_VERSION (one time, ~2-4 min on 2 cores)"
        local build
        build=$(mktemp -d)
        "$VENV/bin/pip" download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$build"
        tar -xzf "$build"/horovod-"$HOROVOD_VERSION".tar.gz -C "$build"
        local src="$build/horovod-$HOROVOD_VERSION"
        # torch >= 2.1 headers need C++17; horovod 0.28.1 asks for C++14
        # (fixed upstream, never released).
        sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
            "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
        grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt" \
            || die "the C++17 patch did not apply to horovod's CMakeLists.txt"
        mkdir -p "$wheel_dir"
        # The build prints thousands of lines (setuptools deprecation notices,
        # compiler output): keep them in a log, show its end only on failure.
        (cd "$src" && env "${gpu_env[@]}" \
         HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
         HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
         HOROVOD_CPU_OPERATIONS=gloo MAKEFLAGS="-j$(nproc)" \
         "$VENV/bin/pip" wheel --no-build-isolation --no-deps . -w "$wheel_dir") >"$build/build.log" 2>&1 \
            || { tail -n 60 "$build/build.log" >&2; rm -rf "$wheel_dir"; die "horovod build failed (log above; full log in $build/build.log)"; }
        rm -rf "$build"
    fi
    ls "$wheel_dir"/horovod-*.whl
}

setup_main() {
    local stamp="$VENV/.ple-setup-$(inputs_hash)"
    if [[ -f "$stamp" ]]; then
        log "main environment up to date ($VENV)"
        return
    fi
    fetch_delta_jars
    fetch_cluster_jars
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating virtual environment $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local pip="$VENV/bin/pip"
    "$pip" install -q --upgrade "pip>=24" wheel
    log "installing the pinned stack (torch, pyspark, delta-spark, pyarrow, ...)"
    # setuptools warns loudly about editable installs of a flat layout: harmless here.
    PYTHONWARNINGS=ignore "$pip" install -q -e ".[dev]"
    log "installing petastorm $PETASTORM_VERSION without its setuptools<70 pin"
    "$pip" install -q --no-deps "petastorm==$PETASTORM_VERSION"
    local wheel
    wheel=$(horovod_wheel)
    log "installing $(basename "$wheel")"
    "$pip" install -q --no-deps --force-reinstall "$wheel"
    "$pip" check >/dev/null 2>&1 || true   # petastorm's pin is knowingly unmet
    "$VENV/bin/python" - <<'PY'
import horovod.torch, petastorm, pyspark, delta, torch
assert horovod.torch.gloo_built(), "horovod was built without Gloo"
print(f"  torch {torch.__version__}, pyspark {pyspark.__version__}, petastorm {petastorm.__version__}, horovod {horovod.__version__}")
PY
    rm -f "$VENV"/.ple-setup-*
    touch "$stamp"
    log "main environment ready"
}

# --- Airflow in its own environment: its Spark provider pulls pyspark-client
# 4.x, which clashes with pyspark 3.5 in the main environment. -------------
setup_airflow() {
    local stamp="$AIRFLOW_VENV/.ple-setup-$(inputs_hash)"
    if [[ -f "$stamp" ]]; then
        log "Airflow environment up to date ($AIRFLOW_VENV)"
        return
    fi
    if [[ ! -x "$AIRFLOW_VENV/bin/python" ]]; then
        log "creating virtual environment $AIRFLOW_VENV"
        "$PYTHON" -m venv "$AIRFLOW_VENV"
    fi
    log "installing Airflow $AIRFLOW_VERSION + Spark provider $AIRFLOW_SPARK_PROVIDER_VERSION"
    "$AIRFLOW_VENV/bin/pip" install -q --upgrade "pip>=24"
    "$AIRFLOW_VENV/bin/pip" install -q "apache-airflow==$AIRFLOW_VERSION" \
        "apache-airflow-providers-apache-spark==$AIRFLOW_SPARK_PROVIDER_VERSION" \
        "pytest>=8" "pytest-timeout"
    "$AIRFLOW_VENV/bin/python" -c 'import airflow; print("  airflow", airflow.__version__)'
    rm -f "$AIRFLOW_VENV"/.ple-setup-*
    touch "$stamp"
    log "Airflow environment ready"
}

check_prereqs
case "${1:-all}" in
    all) setup_main; setup_airflow ;;
    main) setup_main ;;
    airflow) setup_airflow ;;
    jars) fetch_delta_jars; fetch_cluster_jars ;;
    *) die "unknown target '$1' (use: all, main, airflow, jars)" ;;
esac
