#!/usr/bin/env bash
# Build Tailgate's OpenTelemetry Collector test distribution (contrib v0.162.0)
# into <repo>/target/collector/otelcol-tailgate, unless it is already newer
# than go.mod, go.sum and main.go. Works from any cwd. Needs Go >= 1.26 and the
# Go module proxy (first build downloads ~2 GB of modules into GOMODCACHE).
#
# Usage: tests/collector/build.sh [--force]
# Prints the binary's path as the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out_dir="$root/target/collector"
bin="$out_dir/otelcol-tailgate"

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; fi

up_to_date() {
    [[ -x "$bin" ]] || return 1
    local f
    for f in go.mod go.sum main.go; do
        [[ "$bin" -nt "$here/$f" ]] || return 1
    done
    return 0
}

if [[ $force -eq 0 ]] && up_to_date; then
    echo "otelcol-tailgate: up to date, skipping build ($bin)" >&2
    echo "$bin"
    exit 0
fi

command -v go >/dev/null 2>&1 || { echo "otelcol-tailgate: 'go' not found on PATH" >&2; exit 1; }

mkdir -p "$out_dir"
echo "otelcol-tailgate: building with $(go version) -> $bin" >&2
start=$(date +%s)
(
    cd "$here"
    # -mod=readonly: go.sum is committed; never rewrite it during a build.
    # -buildvcs=false: the module sits inside the Rust repo's git tree.
    GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
        go build -trimpath -ldflags="-s -w" -o "$bin.tmp" .
)
mv -f "$bin.tmp" "$bin"
end=$(date +%s)
echo "otelcol-tailgate: built in $((end - start))s, $(du -h "$bin" | cut -f1)" >&2
echo "$bin"
