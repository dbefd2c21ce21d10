#!/usr/bin/env bash
# Installs versitygw, the real S3 server the S3 backend's tests start on
# 127.0.0.1, into $(go env GOPATH)/bin. Idempotent: does nothing if the
# pinned version is already there (~2 min to build cold).
set -euo pipefail
VERSION=v1.8.0
bin="$(go env GOPATH)/bin/versitygw"
stamp="$bin.version"
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
# Outside the module so the project's go.mod is not touched.
(cd / && GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@$VERSION")
echo "$VERSION" >"$stamp"
