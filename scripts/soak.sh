#!/usr/bin/env bash
# scripts/soak.sh [kills|cuts|fuzz|load|all]...: the long runs of issue 20
# (not part of CI; docs/performance.md, "Soak").
#
#   kills  SOAK_KILLS (1000) SIGKILLs of a real `blockwise serve` under
#          random NBD writes, flushes and snapshots, each followed by the
#          data and CBT comparison (TestSoakServeKills).
#   cuts   SOAK_CUTS (1000) simulated power cuts of the disk engine and as
#          many of the repository writer, on random seeds (TestPowerCutModel,
#          TestPowerCut; a failure names its seed as the subtest).
#   fuzz   every Fuzz* target of the tree for SOAK_FUZZTIME (1m) each;
#          a crasher is left in the package's testdata/fuzz/.
#   load   scripts/soak-load.sh (an hour of API and NBD load).
#   all    kills, cuts and fuzz (the default).
#
# One core at a time (GOMAXPROCS=1, -p 1, -parallel 1): the machine is
# shared. It prints the counts at the end: kills, cuts, execs per target.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${SOAK_KILLS:-1000}
CUTS=${SOAK_CUTS:-1000}
FUZZTIME=${SOAK_FUZZTIME:-1m}
export GOMAXPROCS=${GOMAXPROCS:-1}
LOG=$(mktemp -d /var/tmp/bwsoak.XXXXXX)
SUMMARY=$LOG/summary
: >"$SUMMARY"
echo "soak: logs in $LOG"

kills() {
	BLOCKWISE_SOAK_KILLS=$KILLS go test -p 1 -count=1 -timeout 0 -v \
		-run '^TestSoakServeKills$' ./cmd/blockwise >"$LOG/kills.log" 2>&1 ||
		{ tail -40 "$LOG/kills.log"; echo "soak: kills FAILED"; exit 1; }
	grep '^kills:' "$LOG/kills.log" >>"$SUMMARY"
}

cuts() {
	BLOCKWISE_POWER_CUTS=$CUTS go test -p 1 -count=1 -timeout 0 -v \
		-run '^TestPowerCut(Model)?$' ./internal/disk ./internal/repo >"$LOG/cuts.log" 2>&1 ||
		{ grep -E -- '--- FAIL|_test.go' "$LOG/cuts.log" | head -40; echo "soak: cuts FAILED"; exit 1; }
	grep '^cuts:' "$LOG/cuts.log" >>"$SUMMARY"
}

# targets lists "package target" for every fuzz test in the tree.
targets() {
	grep -rn 'func Fuzz' --include=*_test.go . |
		sed -E 's|^\./(.*)/[^/]*_test\.go:[0-9]+:func (Fuzz[A-Za-z0-9_]*)\(.*|./\1 \2|' | sort -u
}

fuzz() {
	local failed=0
	while read -r pkg target; do
		local p=${pkg#./}; local log="$LOG/fuzz-${p//\//_}-$target.log"
		# A short minimization: the default minute per new input stalls
		# the targets whose runs keep state (a running API, a backend).
		if go test -p 1 -count=1 -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" \
			-fuzzminimizetime 5s -parallel 1 "$pkg" >"$log" 2>&1; then
			status=ok
		else
			status=FAILED failed=1
		fi
		execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
		echo "fuzz: $pkg $target execs ${execs:-0} $status" | tee -a "$SUMMARY"
	done < <(targets)
	return $failed
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
rc=0
for s in "${steps[@]}"; do
	case $s in
	kills) kills ;;
	cuts) cuts ;;
	fuzz) fuzz || rc=1 ;;
	load) scripts/soak-load.sh ;;
	all) kills; cuts; fuzz || rc=1 ;;
	*) echo "usage: $0 [kills|cuts|fuzz|load|all]..." >&2; exit 2 ;;
	esac
done
echo "== soak summary"
cat "$SUMMARY"
exit $rc
