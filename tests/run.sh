#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (the OpenTelemetry Python SDK into
# target/venv, Debian's prometheus, Apache Kafka's jars from Maven Central into target/kafka/libs, Jaeger v2 and an
# OpenTelemetry Collector distribution built from the Go module proxy into target/jaeger and target/collector,
# cargo-fuzz),
# runs every fuzz target briefly, then every Rust test. Brokers are started by the tests themselves, on free ports:
# Apache Kafka (KRaft, a JVM per node) for everything about Kafka's semantics, Tansu in-process for the embedded
# default, librdkafka's MockCluster for injected protocol errors.
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

# Apache Kafka, the broker users run: its own jars and their dependencies, as tests/kafka/pom.xml names them (Java 17
# and Maven are on the machine). Resolved once; a warm run finds them in place.
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tests/kafka/pom.xml)
if [ ! -f "target/kafka/libs/kafka_2.13-$kafka_version.jar" ]; then
  echo "installing Apache Kafka $kafka_version's jars into target/kafka/libs" >&2
  rm -rf target/kafka/libs
  mvn -q -B -f tests/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$PWD/target/kafka/libs"
fi
export TAILGATE_KAFKA_LIBS="$PWD/target/kafka/libs"

# Jaeger v2 (v1.75.0), the real backend the Jaeger exporter is checked against; built once, then cached.
TAILGATE_JAEGER=$(tests/jaeger/build.sh | tail -n 1)
export TAILGATE_JAEGER
# The OpenTelemetry Collector (contrib v0.162.0: kafka receiver and exporter, tail_sampling, …), the other side of the
# Kafka interop tests and of the seed's pipeline run side by side.
TAILGATE_OTELCOL=$(tests/collector/build.sh | tail -n 1)
export TAILGATE_OTELCOL

# Every cargo-fuzz target, briefly and seeded (longer runs: tests/fuzz/run.sh, see the README's "Fuzzing"). Skipped
# when the suite is narrowed with arguments.
if [ $# -eq 0 ]; then
  TAILGATE_FUZZ_SECONDS=${TAILGATE_FUZZ_SECONDS:-10} TAILGATE_FUZZ_SEED=${TAILGATE_FUZZ_SEED:-1} tests/fuzz/run.sh
fi

cargo test --workspace "$@"
