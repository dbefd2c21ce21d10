#!/usr/bin/env bash
# Runs the fuzzers of the readers of untrusted images (internal/fileres:
# partition tables, LVM2 metadata, ext2/3/4, XFS and FAT seeded with images the
# real mkfs tools build) for TIME each: scripts/fuzz.sh 10s (test.sh's
# short mode), scripts/fuzz.sh 30m for a long run. A crash leaves its
# input under internal/fileres/testdata/fuzz/, which go test then replays.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-2m}
for f in FuzzPoint FuzzJournal FuzzXFS FuzzPartitions FuzzLVMText; do
	go test -run '^$' -fuzz "^$f\$" -fuzztime "$time" ./internal/fileres/
done
