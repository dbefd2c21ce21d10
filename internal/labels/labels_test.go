package labels

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockwise/blockwise/internal/metafile"
)

func TestSelector(t *testing.T) {
	l := map[string]string{"tier": "gold", "env": "prod-eu", "team/db": ""}
	for _, c := range []struct {
		sel  string
		want bool
	}{
		{"tier=gold", true},
		{"tier==gold", true},
		{"tier=silver", false},
		{"tier!=silver", true},
		{"tier!=gold", false},
		{"missing!=x", true},
		{"env=prod-*", true},
		{"env=prod-us*", false},
		{"tier", true},
		{"missing", false},
		{"!missing", true},
		{"!tier", false},
		{"team/db", true},
		{"team/db=", true},
		{"tier=gold,env=prod-*", true},
		{"tier=gold, env=dev", false},
	} {
		sel, err := ParseSelector(c.sel)
		if err != nil {
			t.Fatalf("%q: %v", c.sel, err)
		}
		if got := sel.Matches(l); got != c.want {
			t.Errorf("%q matches %v: %v, want %v", c.sel, l, got, c.want)
		}
	}
}

func TestSelectorInvalid(t *testing.T) {
	for _, s := range []string{"", " ", "=x", "a b=c", "k=[", "tier=gold,", "!", "-x=1"} {
		if _, err := ParseSelector(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: err %v, want ErrInvalid", s, err)
		}
	}
}

func TestParseAndValidate(t *testing.T) {
	set, rm, err := Parse([]string{"tier=gold", "env=", "old-"})
	if err != nil || set["tier"] != "gold" || set["env"] != "" || len(rm) != 1 || rm[0] != "old" {
		t.Fatalf("Parse: %v %v %v", set, rm, err)
	}
	for _, bad := range [][]string{{"tier"}, {"<script>=x"}, {"k=a b"}, {"k=<b>"}} {
		if _, _, err := Parse(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q): %v, want ErrInvalid", bad, err)
		}
	}
	many := map[string]string{}
	for i := range MaxPerDisk + 1 {
		many[string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	if err := Validate(many); !errors.Is(err, ErrInvalid) {
		t.Errorf("%d labels: %v", len(many), err)
	}
}

// TestStoreDurable: labels survive a reopen, a failed update changes
// nothing, and a damaged file is refused rather than read as empty.
func TestStoreDurable(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update("d1", map[string]string{"tier": "gold", "env": "prod"}, nil, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Update("d1", map[string]string{"zone": "a"}, []string{"env"}, false); String(got) != "tier=gold,zone=a" {
		t.Fatalf("patch: %v", got)
	}
	if _, err := s.Update("d1", map[string]string{"bad key": "x"}, nil, false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid update: %v", err)
	}
	if _, err := s.Update("d2", map[string]string{"a": "1"}, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("d2"); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := String(s2.Get("d1")); got != "tier=gold,zone=a" {
		t.Errorf("reopened d1: %q", got)
	}
	if len(s2.Get("d2")) != 0 || len(s2.All()) != 1 {
		t.Errorf("reopened: %v", s2.All())
	}
	if fi, err := os.Stat(filepath.Join(dir, File)); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("file mode: %v %v", fi, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, File))
	b[len(b)-2] ^= 0xff
	if err := os.WriteFile(filepath.Join(dir, File), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, metafile.ErrCorrupt) {
		t.Errorf("damaged file: %v, want ErrCorrupt", err)
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"tier=gold", "a!=b,!c,d", "env=prod-*", "k==[", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		sel.Matches(map[string]string{"tier": "gold", "a": "b"})
		if sel.String() != s {
			t.Fatalf("String %q, want %q", sel.String(), s)
		}
	})
}
