#!/usr/bin/env bash
# bench/nbdab.sh TEST PAIRS VARIANTS...: one row of bench/nbd.sh, run
# with servers alternated, for before/after comparisons on a loaded
# machine (issue 23). A variant is nbdkit or the name of a blockwise
# binary in $B (e.g. blockwise-before built from an older commit). $W
# holds random.img (bench/mkdisk -gen random -size $((512<<20))) and the
# variants' datastores. Prints: variant test MB/s server-CPU.
# TEST: randread | randwrite | cwrite-unix | cwrite-tcp | cread-unix | cread-tcp
set -euo pipefail
W=${W:?}; B=${B:?}
TEST=$1; PAIRS=$2; shift 2
TICK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
warm() { python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"; cat "$1" >/dev/null; }
SIZE=$((512<<20))
start() { # variant -> sets PID URI FILE
	local v=$1
	rm -f $W/s.sock
	if [ "$v" = nbdkit ]; then
		[ -f $W/k.raw ] || cp --sparse=always $W/random.img $W/k.raw
		if [ "${TEST#*-}" = tcp ]; then nbdkit -f -i 127.0.0.1 -p 10901 file file=$W/k.raw & PID=$!
		else nbdkit -f -U $W/s.sock file file=$W/k.raw & PID=$!; fi
		FILE=$W/k.raw; UU="nbd+unix:///?socket=$W/s.sock"; UT="nbd://127.0.0.1:10901/"
	else
		[ -d $W/ds-$v ] || $B/mkdisk -datastore $W/ds-$v -name d -import $W/random.img
		$B/$v serve --datastore $W/ds-$v --nbd-unix $W/s.sock --nbd-tcp 127.0.0.1:10901 --nbd-tcp-insecure-no-auth 2>/dev/null & PID=$!
		FILE=$W/ds-$v/d/flat.raw; UU="nbd+unix:///d?socket=$W/s.sock"; UT="nbd://127.0.0.1:10901/d"
	fi
	local u=$UU; [ "${TEST#*-}" = tcp ] && u=$UT
	for _ in $(seq 100); do timeout 5 nbdinfo --size "$u" >/dev/null 2>&1 && break; sleep 0.1; done
}
for p in $(seq $PAIRS); do
	for v in "$@"; do
		start $v
		case $TEST in
		rand*)
			warm $FILE; c0=$(cpu $PID)
			fio --name=nbd --ioengine=nbd --uri="$UU" --rw=$TEST --bs=4k --iodepth=16 --numjobs=4 --size=$SIZE \
				--time_based --runtime=5 --group_reporting --output-format=json --output=$W/fio.json >/dev/null
			c1=$(cpu $PID)
			bw=$(jq '[.jobs[] | .read.bw_bytes + .write.bw_bytes] | add / 1000000' $W/fio.json)
			ios=$(jq '[.jobs[] | .read.total_ios + .write.total_ios] | add' $W/fio.json)
			echo "$v $TEST $bw $(echo "($c1 - $c0) * 1000000 / $TICK / $ios" | bc -l) us/req" ;;
		cwrite-*|cread-*)
			u=$UU; [ ${TEST#*-} = tcp ] && u=$UT
			if [ ${TEST%-*} = cwrite ]; then warm $W/random.img; else warm $FILE; fi
			c0=$(cpu $PID); a=$(date +%s.%N)
			if [ ${TEST%-*} = cwrite ]; then nbdcopy --flush $W/random.img "$u"; else nbdcopy "$u" null:; fi
			b=$(date +%s.%N); c1=$(cpu $PID)
			echo "$v $TEST $(echo "$SIZE / ($b - $a) / 1000000" | bc -l | cut -c1-6) $(echo "($c1 - $c0) * 1000 / $TICK / ($SIZE / 2^30)" | bc -l | cut -c1-6) ms/GiB" ;;
		esac
		kill $PID; wait $PID 2>/dev/null || true
	done
done
