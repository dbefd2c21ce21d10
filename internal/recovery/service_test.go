package recovery

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/transport"
)

// TestRecoverRefuses: requests the service refuses before it opens the
// repository or begins a job, each with its typed error; and List reads
// the recoveries from their directories. (TestE2ERecoverHost in
// cmd/blockwise runs whole recoveries against a real host.)
func TestRecoverRefuses(t *testing.T) {
	ds := t.TempDir()
	opened := 0
	s := &Service{o: Options{Datastore: ds, OpenRepo: func(context.Context) (*repo.Repository, error) {
		opened++
		return nil, errors.New("not in this test")
	}}, running: map[string]string{"busy": "job-7"}}
	ctx := context.Background()
	point := "c5ce8c29" + "00000000000000000000000000000000000000000000000000000000"
	if err := backup.SaveRecoverState(mkdir(t, s.dir("stopped")), backup.RecoverState{Point: point, Disk: "stopped", Phase: backup.PhaseCopying}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		ready bool
		req   wire.RecoveryRequest
		want  error
	}{
		{"host starting", false, wire.RecoveryRequest{Point: "latest", ToDisk: "new"}, api.ErrRecoveryInvalid},
		{"disk name with a slash", true, wire.RecoveryRequest{Point: "latest", ToDisk: "../x"}, api.ErrRecoveryInvalid},
		{"empty disk name", true, wire.RecoveryRequest{Point: "latest"}, api.ErrRecoveryInvalid},
		{"negative workers", true, wire.RecoveryRequest{Point: "latest", ToDisk: "new", Workers: -1}, api.ErrRecoveryInvalid},
		{"no point", true, wire.RecoveryRequest{ToDisk: "new"}, api.ErrRecoveryInvalid},
		{"running", true, wire.RecoveryRequest{Point: "latest", ToDisk: "busy"}, api.ErrRecoveryExists},
		{"stopped, no resume", true, wire.RecoveryRequest{Point: "latest", ToDisk: "stopped"}, api.ErrRecoveryExists},
		{"resume of none", true, wire.RecoveryRequest{ToDisk: "new", Resume: true}, api.ErrRecoveryNotFound},
		{"resume of another point", true, wire.RecoveryRequest{Point: "ffff", ToDisk: "stopped", Resume: true}, api.ErrRecoveryInvalid},
		{"resume from another policy", true, wire.RecoveryRequest{Policy: "p", ToDisk: "stopped", Resume: true}, api.ErrRecoveryInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.env = transport.Env{}
			if c.ready {
				cl, err := client.New("unix://"+filepath.Join(ds, "api.sock"), client.Options{})
				if err != nil {
					t.Fatal(err)
				}
				s.env.Client = cl
			}
			if _, err := s.Recover(ctx, c.req); !errors.Is(err, c.want) {
				t.Errorf("%+v: %v, want %v", c.req, err, c.want)
			}
		})
	}
	if opened != 0 {
		t.Errorf("the repository was opened %d times for refused requests", opened)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].ToDisk != "stopped" || list[0].Point != point || list[0].Export != "c5ce8c29" || list[0].Job != "" {
		t.Fatalf("List: %+v %v", list, err)
	}
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRepositoryOf: a request's repository is the named policy's (the
// scheduler's, never closed by the job) or the host's --points-repo; a
// host without the one asked for refuses with the typed error, and no
// request brings a credential.
func TestRepositoryOf(t *testing.T) {
	fail := errors.New("opened")
	var asked []string
	policyRepo := func(_ context.Context, name string) (*repo.Repository, error) {
		asked = append(asked, name)
		return nil, fail
	}
	pointsRepo := func(context.Context) (*repo.Repository, error) {
		asked = append(asked, "--points-repo")
		return nil, fail
	}
	for _, c := range []struct {
		name   string
		o      Options
		policy string
		want   error
		asked  string
	}{
		{"policy, host without policies", Options{OpenRepo: pointsRepo}, "p", api.ErrPolicyNotFound, ""},
		{"no policy, no --points-repo", Options{PolicyRepo: policyRepo}, "", api.ErrRecoveryNotFound, ""},
		{"policy", Options{OpenRepo: pointsRepo, PolicyRepo: policyRepo}, "p", fail, "p"},
		{"no policy", Options{OpenRepo: pointsRepo, PolicyRepo: policyRepo}, "", fail, "--points-repo"},
	} {
		t.Run(c.name, func(t *testing.T) {
			asked = nil
			s := &Service{o: c.o}
			if _, _, err := s.repository(context.Background(), c.policy); !errors.Is(err, c.want) {
				t.Errorf("policy %q: %v, want %v", c.policy, err, c.want)
			}
			if got := strings.Join(asked, ","); got != c.asked {
				t.Errorf("policy %q opened %q, want %q", c.policy, got, c.asked)
			}
		})
	}
}
