#!/usr/bin/env bash
# bench/engine.sh: the engine benchmarks of issue 2 (internal/disk
# bench_test.go) with fixed -benchtime counts (about 3-4 minutes), printed
# as a table against the goals. Medians over COUNT runs; CBT on and off
# run side by side (interleaved) in the same process.
# Env: COUNT (3), QCA_DIV (100: 1% of the 64 KiB blocks changed),
# QCA_WRITE (zero: see BenchmarkQueryChangedAreas; "sector" writes one
# 512-byte sector per block, which takes minutes of random writeback here),
# TREE_DIV (100: 1% of a 1 TiB disk's 64 KiB blocks changed before the
# timed snapshot of BenchmarkHashTree; 1000 for a quicker run),
# CPUPROFILE=FILE profiles the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-3}
W=$(mktemp -d /tmp/bw-enginebench.XXXXXX)
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT TERM
export TMPDIR=$W # the benchmarks' temp datastores
export BLOCKWISE_BENCH_QCA_DIV=${QCA_DIV:-100}
export BLOCKWISE_BENCH_QCA_WRITE=${QCA_WRITE:-zero}
export BLOCKWISE_BENCH_TREE_DIV=${TREE_DIV:-100}
go test -c -o "$W/disk.test" ./internal/disk/
prof=()
[ -n "${CPUPROFILE:-}" ] && prof=(-test.cpuprofile "$CPUPROFILE")

b() { # pattern benchtime count
	timeout 600 "$W/disk.test" -test.run '^$' -test.bench "$1" -test.benchtime "$2" -test.count "$3" \
		-test.v "${prof[@]}" 2>&1 | tee -a "$W/out.txt" | grep -E '^Benchmark.*-[0-9]+ |setup:' >&2 || true
}
START=$(date +%s)
b '^BenchmarkWrite$/rand4k' 32768x "$COUNT"
b '^BenchmarkWrite$/seq1m' 1024x "$COUNT"
b '^BenchmarkQueryChangedAreas$' 5x 1
b '^BenchmarkSnapshotCreate$' 20x 1
b '^BenchmarkConsolidate$' 1x "$COUNT"
b '^BenchmarkDeltaGrain$' 8192x 1
b '^BenchmarkHashTree$/write' 65536x "$COUNT"
b '^BenchmarkHashTree$/snapshot1TiB' 1x 1
END=$(date +%s)

echo
echo "Engine benchmarks, $(nproc) cores, $(go env GOVERSION), medians of $COUNT where repeated ($((END - START)) s)"
python3 - "$W/out.txt" "$BLOCKWISE_BENCH_QCA_DIV" "$BLOCKWISE_BENCH_QCA_WRITE" "$BLOCKWISE_BENCH_TREE_DIV" <<'EOF'
import sys, re, statistics, collections
m = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    if not line.startswith("Benchmark") or "\t" not in line:
        continue
    f = line.split()
    name = re.sub(r"-\d+$", "", f[0])
    vals = f[2:]
    for i in range(0, len(vals) - 1, 2):
        try:
            m[name][vals[i + 1]].append(float(vals[i]))
        except ValueError:
            pass
def g(name, unit):
    v = m.get(name, {}).get(unit)
    return statistics.median(v) if v else float("nan")
rows = []
def row(what, value, unit, goal, ok):
    rows.append((what, value, unit, goal, "" if ok is None else ("ok" if ok else "MISS")))
for w in ("rand4k", "seq1m"):
    for lay in ("flat", "delta"):
        on, off = g(f"BenchmarkWrite/{w}/{lay}/cbt", "MB/s"), g(f"BenchmarkWrite/{w}/{lay}/nocbt", "MB/s")
        label = {"rand4k": "4 KiB random", "seq1m": "1 MiB sequential"}[w]
        row(f"write {label}, {lay}, CBT on / off MB/s", f"{on:.0f} / {off:.0f}", "MB/s", "", None)
        row(f"  ratio CBT on/off ({w}, {lay})", f"{on/off:.2f}", "x", ">= 0.95", on / off >= 0.95)
div, how = int(sys.argv[2]), {"zero": "4 KiB zeroes", "sector": "512-byte writes"}.get(sys.argv[3], sys.argv[3])
q = "BenchmarkQueryChangedAreas/8TiB/1of%d" % div
row(f"QueryChangedAreas 8 TiB, 1/{div} of 64 KiB blocks ({how}), in-process", f"{g(q, 'ms/query'):.1f}", "ms", "<= 100", g(q, "ms/query") <= 100)
row("  same, fresh process (open + query)", f"{g(q, 'child-ms/query'):.1f}", "ms", "<= 100", g(q, "child-ms/query") <= 100)
row("  fresh process RSS / peak (VmRSS / VmHWM)", f"{g(q, 'child-RSS-MiB'):.1f} / {g(q, 'child-HWM-MiB'):.1f}", "MiB", "<= 64", g(q, "child-HWM-MiB") <= 64)
row("  areas / pages", f"{g(q, 'areas'):.0f} / {g(q, 'pages'):.0f}", "", "", None)
s = "BenchmarkSnapshotCreate/cbt"
row("snapshot create, 1 TiB disk, busy (mean / p99)", f"{g(s, 'ms/snapshot'):.1f} / {g(s, 'p99-ms'):.1f}", "ms", "<= 10", g(s, "ms/snapshot") <= 10)
row("  4 KiB writes around it, p99 / max (CBT on)", f"{g(s, 'write-p99-us'):.0f} / {g(s, 'write-max-us'):.0f}", "us", "", None)
s = "BenchmarkSnapshotCreate/nocbt"
row("  same, CBT off: p99 / max", f"{g(s, 'write-p99-us'):.0f} / {g(s, 'write-max-us'):.0f}", "us", "", None)
c = "BenchmarkConsolidate"
row("consolidation throughput (256 MiB delta)", f"{g(c, 'MB/s-merged'):.0f}", "MB/s", "", None)
row("4 KiB write latency during consolidation p50 / p99 / max", f"{g(c, 'p50-us'):.0f} / {g(c, 'p99-us'):.0f} / {g(c, 'max-us'):.0f}", "us", "", None)
row("  same writer without consolidation, p99", f"{g(c, 'idle-p99-us'):.0f}", "us", "", None)
for gr in (4096, 65536):
    d = f"BenchmarkDeltaGrain/grain={gr}"
    row(f"grain {gr}: 4 KiB random writes into a fresh delta", f"{g(d + '/write4k-fresh-delta', 'MB/s'):.0f}", "MB/s", "", None)
    row(f"  bytes held / bytes written", f"{g(d + '/write4k-fresh-delta', 'amplification'):.2f}", "x", "", None)
    r1, r3 = g(d + "/seqread-1layer", "MB/s"), g(d + "/seqread-3layer", "MB/s")
    row(f"  sequential read 1 MiB, flat / 3-layer chain", f"{r1:.0f} / {r3:.0f}", "MB/s", "", None)
on, off = g("BenchmarkHashTree/write/rand4k/tree", "MB/s"), g("BenchmarkHashTree/write/rand4k/notree", "MB/s")
row("write 4 KiB random, snapshot every 8192, hash tree on / off", f"{on:.0f} / {off:.0f}", "MB/s", "", None)
row("  ratio tree on/off", f"{on/off:.2f}", "x", ">= 0.97", on / off >= 0.97)
h, tdiv = "BenchmarkHashTree/snapshot1TiB", int(sys.argv[4])
on, off = g(h + "/tree", "ms/snapshot"), g(h + "/notree", "ms/snapshot")
row(f"snapshot create, 1 TiB, 1/{tdiv} of blocks changed, tree on / off", f"{on:.1f} / {off:.1f}", "ms", "<= 5 more", on - off <= 5)
row(f"  time until its root is ready ({g(h + '/tree', 'blocks'):.0f} blocks rehashed)", f"{g(h + '/tree', 's-to-root'):.2f}", "s", "", None)
row("  its tree file / heap held by the tree", f"{g(h + '/tree', 'tree-file-MiB'):.1f} / {g(h + '/tree', 'tree-heap-MiB'):.0f}", "MiB", "", None)
w = [max(len(str(r[i])) for r in rows + [("measure", "value", "unit", "goal", "")]) for i in range(5)]
fmt = "| " + " | ".join("{:<%d}" % x for x in w) + " |"
print(fmt.format("measure", "value", "unit", "goal", ""))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print(fmt.format(*r))
EOF
