#!/usr/bin/env bash
# Lint: go vet and staticcheck (pinned; installed into $(go env GOPATH)/bin
# outside the module so go.mod stays as it is). staticcheck's default
# checks (SA, S, ST subset, U1000 unused code) with no exclusions.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v0.8.2
bin="$(go env GOPATH)/bin/staticcheck"
if [ ! -x "$bin" ] || [ "$(cat "$bin.version" 2>/dev/null)" != "$VERSION" ]; then
  (cd / && GOFLAGS=-mod=mod go install "honnef.co/go/tools/cmd/staticcheck@$VERSION")
  echo "$VERSION" >"$bin.version"
fi
go vet ./...
"$bin" ./...
# Every exported function and method has a doc comment (issue 16: a
# newcomer reads the why next to the name). Test files are exempt.
missing=$(for f in $(git ls-files '*.go' | grep -v '_test\.go$'); do
  awk -v F="$f" 'prev !~ /^\/\// && /^func (\([^)]*\) )?[A-Z]/ {print F":"NR": "$0} {prev=$0}' "$f"
done)
if [ -n "$missing" ]; then
  echo "exported functions without a doc comment:" >&2
  echo "$missing" >&2
  exit 1
fi
