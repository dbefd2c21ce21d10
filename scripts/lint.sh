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
