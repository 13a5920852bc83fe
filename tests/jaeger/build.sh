#!/usr/bin/env bash
# Build Jaeger v2 (github.com/jaegertracing/jaeger/cmd/jaeger at v1.75.0, the
# approved release) into <repo>/target/jaeger/jaeger, unless a binary built
# from that version and newer than go.mod/go.sum is already there. Works from
# any cwd. Needs Go >= 1.26 and the Go module proxy (first build downloads the
# modules into GOMODCACHE).
#
# `go install …/cmd/jaeger@v1.75.0` is refused (Jaeger's go.mod has a replace
# directive), so tests/jaeger is a tiny module that names Jaeger as a tool
# (go.mod `tool` directive, with the same replace) and builds that package.
#
# Usage: tests/jaeger/build.sh [--force]
# Prints the binary's path as the last line of stdout.
set -euo pipefail

JAEGER_VERSION=v1.75.0
JAEGER_PKG=github.com/jaegertracing/jaeger/cmd/jaeger

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out_dir="$root/target/jaeger"
bin="$out_dir/jaeger"

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; fi

command -v go >/dev/null 2>&1 || { echo "jaeger: 'go' not found on PATH" >&2; exit 1; }

up_to_date() {
    [[ -x "$bin" ]] || return 1
    local f
    for f in go.mod go.sum; do
        [[ "$bin" -nt "$here/$f" ]] || return 1
    done
    # The embedded build info names the Jaeger module version it was built from
    # (the `mod` line: the main package belongs to Jaeger's module).
    go version -m "$bin" 2>/dev/null \
        | grep -qE "^[[:space:]]+(mod|dep)[[:space:]]+github\.com/jaegertracing/jaeger[[:space:]]+${JAEGER_VERSION}([[:space:]]|$)"
}

if [[ $force -eq 0 ]] && up_to_date; then
    echo "jaeger: $JAEGER_VERSION up to date, skipping build ($bin)" >&2
    echo "$bin"
    exit 0
fi

mkdir -p "$out_dir"
echo "jaeger: building $JAEGER_PKG@$JAEGER_VERSION with $(go version) -> $bin" >&2
start=$(date +%s)
(
    cd "$here"
    GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
        go build -trimpath \
        -ldflags="-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=${JAEGER_VERSION}" \
        -o "$bin.tmp" "$JAEGER_PKG"
)
mv -f "$bin.tmp" "$bin"
end=$(date +%s)
echo "jaeger: built in $((end - start))s, $(du -h "$bin" | cut -f1)" >&2
echo "$bin"
