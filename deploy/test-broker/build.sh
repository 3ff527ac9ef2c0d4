#!/usr/bin/env bash
# Builds the Kafka-compatible broker of the real-broker tests, benchmarks and chaos runs:
# Tansu (https://github.com/tansu-io/tansu) with its SQLite storage, from the released crates
# (checksums pinned below), with tansu-sqlite-fetch.patch applied to its storage crate.
#
# Usage: build.sh VERSION PREFIX   (installs PREFIX/bin/tansu; about 10 minutes on 2 cores)
#
# Why a patch: Tansu 0.6.0's SQLite engine answers each fetch with a query that sums record sizes
# over every record from the fetch offset to the high watermark, and looks up each fetched
# record's headers in an unindexed table. Both grow with the topic, so a consumer that is behind
# (a service restoring, or a load of 20,000 accounts) made the broker scan its whole store on
# every fetch: 512 records consumed in 5 minutes at 100% of a core. The patch bounds a fetch to
# the first 1,000 records from the fetch offset and indexes the headers by (partition, offset).
# (It first bounded the offsets instead, to 1,000 past the fetch offset: once compaction had
# left a gap that wide in a changelog, every fetch from before the gap came back empty and a
# consumer restoring from it never moved on.) A third fix: a produce from an
# idempotent producer with an epoch the broker has no record of (seen when ingest's producer
# wrote on across a broker restart in a 100,000-event chaos run) made the engine panic ("more or
# less than one row"), which stopped its storage service: every later request failed until the
# broker was restarted. It now answers UNKNOWN_PRODUCER_ID, from which the producer recovers.
# A fourth: a fetch slept out its whole max_wait_ms even when records were there (every hop
# took the consumer's fetch.wait.max.ms, 500 ms by default); it now answers as soon as
# min_bytes are there, as Kafka does, and a fetch still waiting looks again after each produce
# to one of its topics. A fifth: the compaction of compacted topics (run at the broker's start
# and every 10 minutes, holding the storage thread) joined every record with every duplicated
# key; with 200,000 records it ran for minutes, so a broker restarted during a 100,000-event chaos
# run answered no request (not even ApiVersions). It now ranks records per key with a window
# function: 0.19 s on that database (same records deleted as the stock query on a 30,000-record
# sample of it).
# Kafka's protocol is unchanged.
set -euo pipefail

version=${1:?usage: build.sh VERSION PREFIX}
prefix=${2:?usage: build.sh VERSION PREFIX}
here=$(cd "$(dirname "$0")" && pwd)

case "$version" in
  0.6.0)
    tansu_sha256=4fdd85473ec265140488cf8d55e82b844f5c051c8916fabdd4a71156ac053f6d
    storage_sha256=720d2ed8e6010c70f7f06e5af5a7274ebbf6e42fdcd9e46de542b10dc4d2f35d
    ;;
  *)
    echo "build.sh: no pinned checksums for Tansu $version" >&2
    exit 1
    ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {
  local name=$1 sha256=$2
  curl -fsSL --retry 3 -o "$work/$name.crate" \
    "https://static.crates.io/crates/$name/$name-$version.crate"
  echo "$sha256  $work/$name.crate" | sha256sum --check --quiet
  tar -xzf "$work/$name.crate" -C "$work"
}

fetch tansu "$tansu_sha256"
fetch tansu-storage "$storage_sha256"
patch --quiet -d "$work/tansu-storage-$version" -p1 < "$here/tansu-sqlite-fetch.patch"
printf '\n[patch.crates-io]\ntansu-storage = { path = "../tansu-storage-%s" }\n' "$version" \
  >> "$work/tansu-$version/Cargo.toml"

# The crate's own Cargo.lock pins the dependency versions Tansu was released with; only the
# patched crate's entry changes.
cargo build --release --features libsql --manifest-path "$work/tansu-$version/Cargo.toml" \
  --target-dir "$work/target"
install -D -m 0755 "$work/target/release/tansu" "$prefix/bin/tansu"
echo "installed $prefix/bin/tansu"
