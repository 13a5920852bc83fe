#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (the OpenTelemetry Python SDK into
# target/venv, Debian's prometheus, cargo-fuzz), runs every fuzz target briefly, then every Rust test. Brokers are started by the tests themselves (Tansu in-process,
# librdkafka's MockCluster), on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/venv
if ! "$venv/bin/python" -c 'import opentelemetry.sdk, opentelemetry.proto, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http, kubernetes_validate' 2>/dev/null; then
  echo "installing the OpenTelemetry Python SDK and kubernetes-validate into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
export TAILGATE_PYTHON="$PWD/$venv/bin/python"

# A real Prometheus (Debian's package) receives remote-write in the exporter tests; the tests start it themselves.
if ! command -v prometheus >/dev/null; then
  echo "installing Debian's prometheus" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends prometheus >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends prometheus >/dev/null; }
fi

# Every cargo-fuzz target, briefly and seeded (longer runs: tests/fuzz/run.sh, see the README's "Fuzzing"). Skipped
# when the suite is narrowed with arguments.
if [ $# -eq 0 ]; then
  TAILGATE_FUZZ_SECONDS=${TAILGATE_FUZZ_SECONDS:-10} TAILGATE_FUZZ_SEED=${TAILGATE_FUZZ_SEED:-1} tests/fuzz/run.sh
fi

cargo test --workspace "$@"
