package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/blockwise/blockwise/internal/metafile"
)

// deadPID is the PID of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// TestIntoStates: deadStates lists only this VM's states whose process
// is gone, round-trips what save wrote, and refuses a torn or foreign
// file (it names a restore whose VM may be paused).
func TestIntoStates(t *testing.T) {
	dir := t.TempDir()
	dead, live := deadPID(t), os.Getpid()
	mk := func(pid int, key string) *intoState {
		st := &intoState{Key: key, ID: fmt.Sprintf("bw-%d-r1", pid), Node: "data", Point: "p", Dir: "/x", WasRunning: true, Step: StepCommitting}
		if err := st.save(dir); err != nil {
			t.Fatal(err)
		}
		return st
	}
	want := mk(dead, "/run/vm1.sock")
	mk(live, "/run/vm1.sock") // a restore still running
	mk(dead+1000000, "/run/vm2.sock")
	for _, tc := range []struct {
		key  string
		want []*intoState
	}{
		{"/run/vm1.sock", []*intoState{want}},
		{"/run/vm3.sock", nil},
	} {
		got, err := deadStates(dir, tc.key)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, %v", tc.key, got, err)
		}
	}
	if !PendingRestores(dir, "/run/vm1.sock") || PendingRestores(dir, "/run/vm3.sock") {
		t.Error("PendingRestores")
	}
	if err := want.remove(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := deadStates(dir, "/run/vm1.sock"); len(got) != 0 {
		t.Errorf("after remove: %+v", got)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"torn", metafile.Encode(intoMagic, intoVersion, []byte(`{"id":"bw-1-r1","node":"d"}`))[:30]},
		{"no node", metafile.Encode(intoMagic, intoVersion, []byte(`{"id":"bw-1-r1"}`))},
		{"foreign", []byte("hello")},
	} {
		name := filepath.Join(dir, intoPrefix+"bw-"+tc.name+intoSuffix)
		os.WriteFile(name, tc.data, 0o600)
		if _, err := deadStates(dir, "k"); !errors.Is(err, metafile.ErrCorrupt) {
			t.Errorf("%s: %v", tc.name, err)
		}
		os.Remove(name)
	}
}

func FuzzDecodeIntoState(f *testing.F) {
	f.Add(metafile.Encode(intoMagic, intoVersion, []byte(`{"id":"bw-1-r1","node":"d","wasRunning":true}`)))
	f.Add([]byte("BWINTOST"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeIntoState("f", b)
		if err == nil && (st.Node == "" || len(st.ID) < 3) {
			t.Fatalf("accepted %+v", st)
		}
		if err == nil {
			_ = st.suffix()
		}
	})
}
