#!/usr/bin/env bash
# Set-up and the main job on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
go build -o bin/blockwise ./cmd/blockwise
exec bin/blockwise demo "$@"
