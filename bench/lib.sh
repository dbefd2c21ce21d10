# bench/lib.sh: what the benchmark scripts share; sourced, not run.
# The caller sets ROOT (the repository) before sourcing it.

# need COMMAND PACKAGE: installs the Debian package on first use.
need() {
	command -v "$1" >/dev/null 2>&1 && return
	echo "installing $2" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}

# workdir PREFIX: a scratch directory W (under BENCH_DIR, default
# /var/tmp), removed at exit with the host the script started (SERVE_PID).
workdir() {
	W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/$1.XXXXXX")
	SERVE_PID=
	trap bench_cleanup EXIT INT TERM
}
bench_cleanup() {
	[ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
	rm -rf "$W"
}

# build_tools: blockwise and imagegen into W (BW is blockwise's path).
build_tools() {
	BW=$W/blockwise
	(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise && go build -o "$W/imagegen" ./bench/imagegen)
}

# warm PATH...: read files into the page cache and write back every dirty
# page, so each tool starts from the same state: its input cached, and no
# writeback of the previous tool's output competing for CPU and disk (the
# cache here is reclaimed aggressively; blockwise writes its packs around
# the cache, restic and borg through it).
warm() { sync; find "$@" -type f -exec cat {} + >/dev/null 2>&1 || true; }

# serve_image IMAGE: starts `blockwise serve` on BLOCKWISE_DATASTORE and
# fills a disk "bench" of the image's size with it over NBD; sets
# SERVE_PID, BYTES and URI (the disk's NBD URI).
serve_image() {
	BYTES=$(stat -c %s "$1")
	mkdir -p "$BLOCKWISE_DATASTORE"
	"$BW" serve --nbd-tcp "" 2>"$W/serve.log" &
	SERVE_PID=$!
	for _ in $(seq 100); do [ -S "$BLOCKWISE_DATASTORE/api.sock" ] && break; sleep 0.1; done
	"$BW" disk create bench --size "$BYTES" >/dev/null
	URI="nbd+unix:///bench?socket=$BLOCKWISE_DATASTORE/nbd.sock"
	qemu-img convert -n --target-is-zero -f raw -O raw "$1" "$URI"
}
