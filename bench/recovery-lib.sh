# Sourced by bench/recovery.sh and bench/recovery-boot.sh.
# point_from_image IMG NAME: starts `blockwise serve` on
# $BLOCKWISE_DATASTORE (its pid joins PIDS), writes the raw image IMG
# into a new disk NAME over NBD, makes the repository and backs the disk
# up (the restore point every route of the bench reads), then deletes IMG.
point_from_image() {
	local img=$1 name=$2 bytes
	bytes=$(stat -c %s "$img")
	mkdir -p "$BLOCKWISE_DATASTORE"
	"$BW" serve 2>"$W/serve.log" & PIDS+=($!)
	for _ in $(seq 100); do [ -S "$BLOCKWISE_DATASTORE/api.sock" ] && break; sleep 0.1; done
	"$BW" disk create "$name" --size "$bytes" >/dev/null
	qemu-img convert -n --target-is-zero -f raw -O raw "$img" "nbd+unix:///$name?socket=$BLOCKWISE_DATASTORE/nbd.sock"
	"$BW" repo init >/dev/null
	"$BW" backup "$name" >/dev/null
	rm -f "$img"
}
