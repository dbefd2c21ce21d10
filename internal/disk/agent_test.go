package disk

import (
	"errors"
	"strings"
	"testing"
)

// TestAgentPersists: the guest agent socket survives a close and reopen;
// invalid paths are ErrInvalid and change nothing.
func TestAgentPersists(t *testing.T) {
	ds, d := newDisk(t, 1<<20, Options{})
	for _, bad := range []string{"qga.sock", "/run/../qga", "/run/q\x00ga", "/" + strings.Repeat("a", maxAgentPath)} {
		if err := d.SetAgent(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetAgent(%q): %v, want ErrInvalid", bad, err)
		}
	}
	if err := d.SetAgent("/run/vm1/qga.sock"); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d, err := ds.Open("d")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	st, err := d.Stat()
	if err != nil || st.Agent != "/run/vm1/qga.sock" {
		t.Fatalf("after reopen: %q %v", st.Agent, err)
	}
	if err := d.SetAgent(""); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.Stat(); st.Agent != "" {
		t.Fatalf("forgotten agent still %q", st.Agent)
	}
}
