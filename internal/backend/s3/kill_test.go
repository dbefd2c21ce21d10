package s3_test

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend/s3"
	"github.com/blockwise/blockwise/internal/backend/s3/s3test"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// The killed child is this test binary run again with these variables.
const (
	childEnv    = "BLOCKWISE_S3_CHILD" // repository string to back up into
	childImages = 40                   // more than the child lives to write
	childSize   = 4 << 20
)

// runChild backs up image i = 0, 1, ... until killed, printing
// "committed i" after each commit so the parent knows what must survive.
func runChild() int {
	ctx := context.Background()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "child:", err); return 1 }
	cfg, err := s3.ParseURL(os.Getenv(childEnv))
	if err != nil {
		return fail(err)
	}
	be, err := s3.Open(ctx, cfg) // credentials from AWS_* in the environment
	if err != nil {
		return fail(err)
	}
	r, err := repo.Open(ctx, stack(be), password, repo.Options{})
	if err != nil {
		return fail(err)
	}
	for i := range childImages {
		if _, err := backup(ctx, r, nil, "disk"+strconv.Itoa(i), randomImage(uint64(100+i), childSize, 0.2), nil); err != nil {
			return fail(err)
		}
		fmt.Printf("committed %d\n", i)
	}
	return 0
}

// A backup process killed with SIGKILL part-way through an upload leaves
// a repository that Check(readData) finds free of errors (leftover packs
// are warnings) and in which every committed backup restores exactly.
func TestKillDuringBackup(t *testing.T) {
	s := s3test.Need(t, srv)
	prefix := s3test.RandomPrefix("kill")
	if _, err := repo.Init(t.Context(), stack(openPrefix(t, prefix)), password, repoOptions); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+s.URL(s3test.Bucket, prefix),
		"AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3test.SecretKey)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	committed := waitCommits(t, cmd, bufio.NewScanner(out), 2)
	// Kill the next backup once its first pack has landed: it is then
	// mid-way, with more packs, the index and the manifest still to come.
	dataDir := filepath.Join(s.Dir, s3test.Bucket, prefix, "data")
	n0 := countFiles(dataDir)
	for deadline := time.Now().Add(30 * time.Second); countFiles(dataDir) == n0 && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	verifyAfterKill(t, prefix, committed)
}

func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// waitCommits reads the child's progress until it reported n commits.
func waitCommits(t *testing.T, cmd *exec.Cmd, sc *bufio.Scanner, n int) int {
	t.Helper()
	done := make(chan int, 1)
	go func() {
		c := 0
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "committed ") {
				if c++; c == n {
					done <- c
				}
			}
		}
		close(done)
	}()
	select {
	case c, ok := <-done:
		if !ok {
			t.Fatal("child exited before committing")
		}
		return c
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("child made no progress")
	}
	return 0
}

func verifyAfterKill(t *testing.T, prefix string, committed int) {
	r, err := repo.Open(t.Context(), stack(openPrefix(t, prefix)), password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := r.ListManifests(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < committed {
		t.Fatalf("%d manifests, child reported %d commits", len(ms), committed)
	}
	for _, m := range ms {
		i, err := strconv.Atoi(strings.TrimPrefix(m.Disk, "disk"))
		if err != nil {
			t.Fatalf("manifest for %q", m.Disk)
		}
		repotest.Verify(t, r.OpenImage, m.ID, randomImage(uint64(100+i), childSize, 0.2))
	}
	res := checkClean(t, r, true)
	t.Logf("after kill: %d manifests (%d reported), %d packs, warnings: %d", len(ms), committed, res.Packs, len(res.Warnings))
}
