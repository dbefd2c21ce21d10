package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/s3"
	"github.com/blockwise/blockwise/internal/backend/s3/s3test"
)

var srv *s3test.Server

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(s3test.Main(m, &srv))
}

// open returns a backend on a fresh prefix of the shared test bucket.
func open(t testing.TB, mutate ...func(*s3.Config)) *s3.Backend {
	t.Helper()
	return openPrefix(t, s3test.RandomPrefix(t.Name()), mutate...)
}

// openPrefix returns a backend on prefix of the shared test bucket.
func openPrefix(t testing.TB, prefix string, mutate ...func(*s3.Config)) *s3.Backend {
	t.Helper()
	s := s3test.Need(t, srv)
	cfg := s.Config(s3test.Bucket, prefix)
	for _, f := range mutate {
		f(&cfg)
	}
	be, err := s3.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return be
}

func TestConformance(t *testing.T) {
	backendtest.RunTests(t, func(t *testing.T) backend.Backend { return open(t) })
}

func newRetry(be backend.Backend, attempts int) *backend.Retry {
	r := backend.NewRetry(be, attempts)
	r.BaseDelay, r.MaxDelay = time.Millisecond, 10*time.Millisecond
	return r
}

func TestConformanceRetryOverFaulty(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			backendtest.RunTests(t, func(t *testing.T) backend.Backend {
				return newRetry(backendtest.NewFaulty(open(t), seed, 0.3), 30)
			})
		})
	}
}

func TestConformanceLimited(t *testing.T) {
	backendtest.RunTests(t, func(t *testing.T) backend.Backend {
		return newRetry(backend.NewLimit(open(t), 4), 5)
	})
}

// versitygw v1.8.0 enforces If-None-Match: *, so the probe must pick the
// atomic mode; the stat fallback must still meet the sequential contract.
func TestCreateModes(t *testing.T) {
	if m := open(t).CreateMode(); m != s3.CreateConditional {
		t.Fatalf("probe chose %q, want conditional", m)
	}
	be := open(t, func(c *s3.Config) { c.Create = s3.CreateStat })
	h := backend.Handle{Type: backend.Manifests, Name: "m1"}
	if err := be.Save(t.Context(), h, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(t.Context(), h, []byte("b")); !errors.Is(err, backend.ErrExists) {
		t.Fatalf("stat mode second save: %v", err)
	}
}

// Two Saves of one name racing: exactly one wins, the other gets
// ErrExists, and the stored object is the winner's, whole.
func TestConcurrentSaveSameName(t *testing.T) {
	be := open(t)
	for round := range 10 {
		h := backend.Handle{Type: backend.Locks, Name: fmt.Sprintf("race%d", round)}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Go(func() { errs[i] = be.Save(t.Context(), h, bytes.Repeat([]byte{byte('a' + i)}, 64<<10)) })
		}
		wg.Wait()
		ok, exists := 0, 0
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				ok, winner = ok+1, i
			case errors.Is(err, backend.ErrExists):
				exists++
			default:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if ok != 1 || exists != 1 {
			t.Fatalf("round %d: %d successes, %d ErrExists", round, ok, exists)
		}
		got, err := backend.LoadAll(t.Context(), be, h, 0, 0)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte('a' + winner)}, 64<<10)) {
			t.Fatalf("round %d: stored object is not the winner's (%v)", round, err)
		}
	}
}

// Objects above the part size go up as multipart uploads; the condition
// must hold there too (it is evaluated at CompleteMultipartUpload).
func TestMultipart(t *testing.T) {
	be := open(t, func(c *s3.Config) { c.PartSize = 5 << 20 })
	data := make([]byte, 11<<20+123)
	for i := range data {
		data[i] = byte(i*31 + i>>12)
	}
	h := backend.Handle{Type: backend.Data, Name: "big0"}
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(t.Context(), h, data[:6<<20]); !errors.Is(err, backend.ErrExists) {
		t.Fatalf("second multipart save: want ErrExists, got %v", err)
	}
	got, err := backend.LoadAll(t.Context(), be, h, 0, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("multipart object differs (%v)", err)
	}
	part, err := backend.LoadAll(t.Context(), be, h, 5<<20-10, 20)
	if err != nil || !bytes.Equal(part, data[5<<20-10:5<<20+10]) {
		t.Fatalf("range across parts differs (%v)", err)
	}
}

// Keys follow the local backend's layout, and foreign keys under the
// prefix are not listed.
func TestKeyLayout(t *testing.T) {
	s := s3test.Need(t, srv)
	prefix := s3test.RandomPrefix("layout")
	be, err := s3.Open(t.Context(), s.Config(s3test.Bucket, prefix+"/sub"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []backend.Handle{{Type: backend.Data, Name: "abcd"}, {Type: backend.Config, Name: "config"}, {Type: backend.Keys, Name: "k1"}} {
		if err := be.Save(t.Context(), h, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"data/ab/abcd", "config", "keys/k1"} {
		if _, err := os.Stat(fmt.Sprintf("%s/%s/%s/sub/%s", s.Dir, s3test.Bucket, prefix, p)); err != nil {
			t.Errorf("key %s: %v", p, err)
		}
	}
	foreign := fmt.Sprintf("%s/%s/%s/sub/data/zz/not.valid", s.Dir, s3test.Bucket, prefix)
	os.MkdirAll(foreign[:len(foreign)-len("/not.valid")], 0o755)
	os.WriteFile(foreign, []byte("x"), 0o644)
	var names []string
	be.List(t.Context(), backend.Data, func(fi backend.FileInfo) error { names = append(names, fi.Name); return nil })
	if fmt.Sprint(names) != "[abcd]" {
		t.Errorf("listed %v", names)
	}
}

// More objects than one ListObjectsV2 page (1000 keys).
func TestListPagination(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	be := backend.NewLimit(open(t), 16)
	var wg sync.WaitGroup
	const n = 1100
	for i := range n {
		wg.Go(func() {
			if err := be.Save(t.Context(), backend.Handle{Type: backend.Index, Name: fmt.Sprintf("i%04d", i)}, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	err := be.List(t.Context(), backend.Index, func(fi backend.FileInfo) error { seen[fi.Name] = true; return nil })
	if err != nil || len(seen) != n {
		t.Fatalf("listed %d of %d (%v)", len(seen), n, err)
	}
}

// A server that is gone gives transient errors (so Retry retries), not
// ErrNotFound or a hang.
func TestServerDownIsTransient(t *testing.T) {
	s3test.Need(t, srv)
	s, err := s3test.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if err := s.MakeBucket(t.Context(), "bkt"); err != nil {
		t.Fatal(err)
	}
	be, err := s3.Open(t.Context(), s.Config("bkt", ""))
	if err != nil {
		t.Fatal(err)
	}
	s.Stop()
	_, err = be.Stat(t.Context(), backend.Handle{Type: backend.Index, Name: "x"})
	if !backend.IsTransient(err) || errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("stat on a dead server: %v", err)
	}
}

func TestOpenMissingBucket(t *testing.T) {
	s := s3test.Need(t, srv)
	if _, err := s3.Open(t.Context(), s.Config("no-such-bucket", "")); err == nil {
		t.Fatal("opened a missing bucket")
	}
}
