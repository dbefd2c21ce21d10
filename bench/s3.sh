#!/usr/bin/env bash
# Full and 1%-incremental backup and restore of one realistic image to the
# local backend and to versitygw on 127.0.0.1, same run; prints times,
# the S3/local ratio, objects per GiB and the incremental's requests.
# Usage: bench/s3.sh [-size MiB] [-dir DIR] [-conns N] [-workers N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/versitygw.sh
go run ./bench/s3bench "$@"
