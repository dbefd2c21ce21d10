package repo

import (
	"os"
	"strconv"
	"testing"
)

// BLOCKWISE_TEST_INDEX_BLOBS=N runs the package with at most N blobs in
// the index's memory, so every test also goes through spilled runs
// (scripts/test.sh does, with a handful).
func TestMain(m *testing.M) {
	if n, err := strconv.Atoi(os.Getenv("BLOCKWISE_TEST_INDEX_BLOBS")); err == nil {
		IndexMemoryBlobs = n
	}
	os.Exit(m.Run())
}
