#!/usr/bin/env bash
# bench/policy.sh [SIZE]   (default 4G; e.g. 1G)
#
# A policy's incremental backup, run by the host with the repository key
# it derived once when the policy was loaded (no Argon2id per run),
# against restic's second run (`restic backup` of the same image file,
# with its password: restic derives its key on every command), after the
# same change: 1% of the 64 KiB blocks (issue 19's goal: >= 50x).
#
# The image (bench/imagegen) is a raw file for restic and, with the same
# bytes, a disk under `blockwise serve` (filled over NBD); the change is
# written to both (imagegen mutate). Each tool's first run is the full
# backup; the second, timed, is the incremental. For blockwise both the
# wall time of `blockwise policy run --wait` (the CLI's request, the
# host's job, the answer) and the job's own duration are given.
# BENCH_DIR picks the scratch directory (default: under /var/tmp).
set -euo pipefail
SIZE=${1:-4G}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
need restic restic
need qemu-img qemu-utils
workdir bwpolicy

export BLOCKWISE_DATASTORE=$W/ds
export RESTIC_REPOSITORY=$W/restic-repo RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache
build_tools
now() { date +%s.%N; }

echo "== image ($SIZE) in $W"
"$W/imagegen" gen -size "$SIZE" -out "$W/disk.raw"
serve_image "$W/disk.raw"
echo bench >"$W/pw"
BLOCKWISE_PASSWORD=bench "$BW" repo init -r "$W/bw-repo" >/dev/null
restic init -q >/dev/null

# The policy: the host derives its key now, once, and keeps it.
"$BW" policy create nightly --disk bench --schedule @yearly --repo "$W/bw-repo" --password-file "$W/pw" --keep-last 5 >/dev/null
for _ in $(seq 600); do "$BW" policy show nightly | grep -q "key held in memory" && break; sleep 0.1; done

echo "== full backups"
warm "$W/disk.raw"; restic backup -q "$W/disk.raw"
warm "$BLOCKWISE_DATASTORE/bench"; "$BW" policy run nightly --wait >/dev/null

echo "== change 1% of the 64 KiB blocks (file and NBD)"
CHANGED=$("$W/imagegen" mutate -file "$W/disk.raw" -uri "$URI" -frac 0.01)
sync

echo "== incrementals"
warm "$W/disk.raw"
t0=$(now); restic backup -q "$W/disk.raw"; t1=$(now)
RESTIC=$(echo "$t1 - $t0" | bc)
warm "$BLOCKWISE_DATASTORE/bench"
t0=$(now); "$BW" policy run nightly --wait --json >"$W/inc.json"; t1=$(now)
BW_WALL=$(echo "$t1 - $t0" | bc)
python3 - "$W/inc.json" "$RESTIC" "$BW_WALL" "$CHANGED" "$BYTES" <<'PY'
import json, re, sys
from datetime import datetime
jobs = json.load(open(sys.argv[1]))
restic, wall, changed, size = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
j = jobs[0]
assert j["state"] == "succeeded", j
def t(s):  # RFC 3339 with up to 9 fractional digits
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-].*)", s)
    frac = (m.group(2) or ".0")[:7]
    return datetime.fromisoformat(m.group(1) + frac + ("+00:00" if m.group(3) == "Z" else m.group(3)))
job = (t(j["ended"]) - t(j["started"])).total_seconds()
s = j["summary"]
print(f"\nimage {size} bytes, changed {changed} bytes (1% of 64 KiB blocks); restic's second run vs the policy's incremental")
print(f"{'':34} {'seconds':>8} {'read MB':>8} {'ratio':>7}")
print(f"{'restic backup (2nd run)':34} {restic:8.2f} {size/1e6:8.0f} {1:7.1f}")
print(f"{'policy run --wait (wall)':34} {wall:8.2f} {s['readBytes']/1e6:8.1f} {restic/wall:7.1f}x")
print(f"{'policy job (started..ended)':34} {job:8.2f} {s['readBytes']/1e6:8.1f} {restic/job:7.1f}x")
print(f"job phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in sorted(s.get("phases", {}).items())))
PY
