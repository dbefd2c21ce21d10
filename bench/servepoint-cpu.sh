#!/usr/bin/env bash
# bench/servepoint-cpu.sh: CPU seconds (utime+stime, /proc) of the serving
# process for nbdcopy of a 1 GiB point, twice in a row: qemu-nbd on the raw
# file, serve-point of REV (default 8fe242b, before issue 21), serve-point
# now, and now with --cache-mb holding the image. CPU, unlike wall time,
# stays put on a shared machine.
set -euo pipefail
W=${BENCH_DIR:-/var/tmp}/bwcpu; rm -rf $W; mkdir -p $W
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_REPO=$W/repo BLOCKWISE_PASSWORD=bench
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd $ROOT && go build -o $W/new ./cmd/blockwise && go build -o $W/imagegen ./bench/imagegen)
git -C $ROOT worktree add -q --detach $W/rev ${REV:-8fe242b} && (cd $W/rev && go build -o $W/old ./cmd/blockwise) && git -C $ROOT worktree remove --force $W/rev
$W/imagegen gen -size 1G -out $W/disk.raw >/dev/null
mkdir -p $BLOCKWISE_DATASTORE
$W/old serve --nbd-tcp "" 2>$W/serve.log & SP=$!
for _ in $(seq 100); do [ -S "$BLOCKWISE_DATASTORE/api.sock" ] && break; sleep 0.1; done
$W/old disk create src --size $(stat -c %s $W/disk.raw) >/dev/null
qemu-img convert -n --target-is-zero -f raw -O raw $W/disk.raw "nbd+unix:///src?socket=$BLOCKWISE_DATASTORE/nbd.sock"
$W/old repo init >/dev/null; $W/old backup src >/dev/null
kill $SP; wait $SP || true
cat $W/disk.raw >/dev/null
TCK=$(getconf CLK_TCK)
cpu() { awk -v t=$TCK '{print ($14+$15)/t}' /proc/$1/stat; }
waitsock() { for _ in $(seq 200); do [ -S "$1" ] && return; sleep 0.05; done; }
measure() { # label cmd...
  local label=$1; shift
  rm -f $W/s.sock; "$@" >/dev/null 2>&1 & local p=$!; waitsock $W/s.sock
  local c0=$(cpu $p) s=$(date +%s.%N)
  nbdcopy "nbd+unix:///?socket=$W/s.sock" null:
  local w=$(awk "BEGIN{print $(date +%s.%N)-$s}") c1=$(cpu $p)
  local s2=$(date +%s.%N)
  nbdcopy "nbd+unix:///?socket=$W/s.sock" null:
  local w2=$(awk "BEGIN{print $(date +%s.%N)-$s2}") c2=$(cpu $p)
  echo "$label: first copy cpu $(awk "BEGIN{print $c1-$c0}") s wall $w s; second copy cpu $(awk "BEGIN{print $c2-$c1}") s wall $w2 s"
  kill $p; wait $p 2>/dev/null || true
}
for i in 1 2; do
measure "qemu-nbd        " qemu-nbd -r -f raw -t -k $W/s.sock $W/disk.raw
measure "serve-point old " $W/old serve-point latest --socket $W/s.sock
measure "serve-point new " $W/new serve-point latest --socket $W/s.sock
measure "new --cache-mb 1100" $W/new serve-point latest --socket $W/s.sock --cache-mb 1100
done
rm -rf $W
