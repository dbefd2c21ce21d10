#!/usr/bin/env bash
# The test command: installs everything, vets, runs the whole suite.
# BLOCKWISE_LONG=1 runs the long crash and model tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/versitygw.sh # the real S3 server of the S3 backend tests
scripts/lint.sh   # go vet and staticcheck
# BLOCKWISE_LONG=1 in the environment selects the long modes.
go test -count=1 -timeout 30m ./...
# The fuzzers of the image readers of file-level restore: briefly here,
# for minutes in the long mode (scripts/fuzz.sh 30m for a real run).
if [[ ${BLOCKWISE_LONG:-} == 1 ]]; then scripts/fuzz.sh 5m; else scripts/fuzz.sh 5s; fi
# The concurrent layers again under the race detector (~1 min here): the
# engine's disk package and the repository are left out for time; their
# long model and crash modes cover them.
go test -race -count=1 -timeout 20m ./internal/cbt ./internal/journal ./internal/host \
	./internal/api ./internal/daemon ./internal/nbd ./internal/transport \
	./internal/backup ./internal/retry ./internal/backend/ ./client \
	./internal/jobs ./internal/console
# Again with at most 5 blobs of the index in memory: the repository's and
# the CLI's tests then also go through the index's spilled runs.
# The CLI's guest, browser, replication and offload tests are skipped in
# this run: they add minutes and reach the index only as the first run did.
BLOCKWISE_TEST_INDEX_BLOBS=5 BLOCKWISE_INDEX_BLOBS=5 go test -count=1 -timeout 30m \
	-skip 'TestConsoleBrowser|TestConsolePages|TestQEMUSource|TestLibvirtSource|TestVAAI|TestWError|TestReplication|TestKilledServe|TestNoSpaceLoopFS|TestE2ERecoverGuest|TestSIGTERM' \
	./internal/repo/ ./internal/backup/ ./cmd/blockwise/
