package s3test

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// Bucket is the bucket Main creates on the server it starts.
const Bucket = "blockwise-test"

// Main is for a package's TestMain: it starts versitygw, creates Bucket,
// stores the server in *srv, runs the tests and stops the server. When
// the binary is missing the tests run with *srv nil (they should skip),
// unless the CI environment variable is set: then it is a failure, so a
// CI machine that lost its set-up step cannot pass by skipping.
func Main(m *testing.M, srv **Server) int {
	s, err := Start("")
	if err != nil {
		if err == ErrNoBinary && os.Getenv("CI") == "" {
			fmt.Fprintf(os.Stderr, "s3test: %v; S3 tests skip\n", err)
			return m.Run()
		}
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	defer s.Stop()
	if err := s.MakeBucket(context.Background(), Bucket); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: s3test: create bucket: %v\n", err)
		return 1
	}
	*srv = s
	return m.Run()
}

// Need returns srv or skips the test when there is no server.
func Need(t testing.TB, srv *Server) *Server {
	t.Helper()
	if srv == nil {
		t.Skip("versitygw not installed (scripts/versitygw.sh)")
	}
	return srv
}
