#!/usr/bin/env bash
# Apache Kafka for the tests: the broker's jars (org.apache.kafka:kafka_2.13 and its runtime
# dependencies, scripts/kafka/pom.xml) from Maven Central into ~/.cache/herald/kafka-<version>/libs.
# Skipped when already there. Needs Java 17 and Maven (installed from Debian when missing).
# The test harness (tests/support/kafka.py) starts the broker from these jars.
set -euo pipefail
cd "$(dirname "$0")/.."

pom=scripts/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
dest="${HERALD_KAFKA_HOME:-$HOME/.cache/herald/kafka-$version}"
if [ -f "$dest/.complete" ]; then
  exit 0
fi

if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  echo "installing Java 17 and Maven from Debian"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    openjdk-17-jre-headless maven >/dev/null
fi

echo "fetching Apache Kafka $version from Maven Central into $dest"
rm -rf "$dest/libs"
mkdir -p "$dest"
mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest/libs"
ls "$dest/libs"/kafka_2.13-"$version".jar >/dev/null
touch "$dest/.complete"
