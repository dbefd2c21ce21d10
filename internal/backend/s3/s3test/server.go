package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/blockwise/blockwise/internal/backend/s3"
)

// Credentials of the test server's root user.
const (
	AccessKey = "blockwise-test"
	SecretKey = "blockwise-test-secret"
)

// ErrNoBinary: versitygw is not installed (run scripts/versitygw.sh).
var ErrNoBinary = errors.New("s3test: versitygw not found on PATH or in $(go env GOPATH)/bin; run scripts/versitygw.sh")

// Server is a running versitygw.
type Server struct {
	Endpoint string // 127.0.0.1:PORT
	Dir      string // the posix root; buckets are its subdirectories
	cmd      *exec.Cmd
	exited   chan struct{}
	ownsDir  bool
	stop     sync.Once
}

// Binary finds versitygw on PATH or in GOPATH/bin.
func Binary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "versitygw")
	if _, err := os.Stat(p); err != nil {
		return "", ErrNoBinary
	}
	return p, nil
}

// Start launches versitygw over dir (a new temporary directory if dir is
// empty) and waits until it accepts connections.
func Start(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, exited: make(chan struct{})}
	if dir == "" {
		if s.Dir, err = os.MkdirTemp("", "blockwise-s3-"); err != nil {
			return nil, err
		}
		s.ownsDir = true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if s.Endpoint, err = freeAddr(); err != nil {
		return nil, err
	}
	// --keep-alive: without it every request pays a new TCP connection.
	s.cmd = exec.Command(bin, "--access", AccessKey, "--secret", SecretKey,
		"--port", s.Endpoint, "--quiet", "--keep-alive", "posix", s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	s.cmd.SysProcAttr = dieWithParent()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("s3test: start %s: %w", bin, err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	if err := s.waitReady(10 * time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// freeAddr asks the kernel for a free port. Another process could take
// it before versitygw binds it; Start then fails its readiness wait.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("s3test: versitygw exited during start-up")
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Endpoint, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("s3test: versitygw not listening on %s after %v", s.Endpoint, timeout)
}

// Stop kills the server and removes its directory if Start made it.
// It may be called more than once.
func (s *Server) Stop() {
	s.stop.Do(func() {
		if s.cmd.Process != nil {
			s.cmd.Process.Kill()
			<-s.exited
		}
		if s.ownsDir {
			os.RemoveAll(s.Dir)
		}
	})
}

// Client returns a minio-go client for the server.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
	})
}

// MakeBucket creates a bucket (if missing).
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	if ok, err := c.BucketExists(ctx, name); err != nil || ok {
		return err
	}
	return c.MakeBucket(ctx, name, minio.MakeBucketOptions{})
}

// Config returns a backend config for bucket/prefix on this server.
func (s *Server) Config(bucket, prefix string) s3.Config {
	return s3.Config{
		Endpoint: s.Endpoint, Bucket: bucket, Prefix: prefix,
		Lookup: minio.BucketLookupPath, Create: s3.CreateAuto,
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""),
	}
}

// URL returns the repository string for bucket/prefix on this server.
func (s *Server) URL(bucket, prefix string) string {
	return s.Config(bucket, prefix).String()
}

// RandomPrefix returns a fresh prefix, so each test gets an empty
// repository without a bucket of its own.
func RandomPrefix(name string) string {
	var b [6]byte
	rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}
