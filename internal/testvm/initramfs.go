package testvm

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// cpioWriter writes a newc ("070701") archive, the format the kernel
// unpacks as an initramfs.
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	seen map[string]bool
}

func newCpio(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), ino: 1, seen: map[string]bool{}}
}

func (c *cpioWriter) header(name string, mode uint32, size int) {
	c.ino++
	fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.w.WriteString(name)
	c.w.WriteByte(0)
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) pad(n int) {
	for ; n%4 != 0; n++ {
		c.w.WriteByte(0)
	}
}

// dir adds a directory and its parents (once each).
func (c *cpioWriter) dir(name string) {
	name = strings.Trim(name, "/")
	if name == "" || name == "." || c.seen[name] {
		return
	}
	c.dir(filepath.Dir(name))
	c.seen[name] = true
	c.header(name, 0o040755, 0)
}

// file adds a regular file with its parents.
func (c *cpioWriter) file(name string, mode uint32, data []byte) {
	name = strings.Trim(name, "/")
	if c.seen[name] {
		return
	}
	c.dir(filepath.Dir(name))
	c.seen[name] = true
	c.header(name, 0o100000|mode, len(data))
	c.w.Write(data)
	c.pad(len(data))
}

// symlink adds a symbolic link name -> target.
func (c *cpioWriter) symlink(name, target string) {
	name = strings.Trim(name, "/")
	if c.seen[name] {
		return
	}
	c.dir(filepath.Dir(name))
	c.seen[name] = true
	c.header(name, 0o120777, len(target))
	c.w.WriteString(target)
	c.pad(len(target))
}

// hostFile copies a file of the host into the archive at the same path,
// following symlinks for the content.
func (c *cpioWriter) hostFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	c.file(path, uint32(st.Mode().Perm()), data)
	return nil
}

func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0)
	return c.w.Flush()
}

// addBinary copies a host executable and the shared libraries ldd lists
// for it (a static binary has none).
func (c *cpioWriter) addBinary(path string) error {
	if err := c.hostFile(path); err != nil {
		return err
	}
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil // "not a dynamic executable": ldd exits non-zero
	}
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if !strings.HasPrefix(f, "/") {
				continue
			}
			if err := c.hostFile(f); err != nil {
				return fmt.Errorf("library of %s: %w", path, err)
			}
		}
	}
	return nil
}

// moduleIndex maps a module name (dashes as underscores) to its .ko
// under the kernel's module tree.
func moduleIndex(modDir string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			idx[modName(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return nil
	})
	return idx, err
}

func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// moduleDepends reads a module's "depends=" from its .modinfo section
// (the tree here has no modules.dep).
func moduleDepends(ko string) ([]string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				deps = append(deps, modName(d))
			}
			return deps, nil
		}
	}
	return nil, nil
}

// moduleOrder returns the .ko files for the wanted modules and their
// dependencies, each after the modules it depends on. Modules built
// into the kernel (modules.builtin) are skipped.
func moduleOrder(modDir string, want []string) ([]string, error) {
	idx, err := moduleIndex(modDir)
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(strings.TrimSuffix(filepath.Base(l), ".ko"))] = true
		}
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string) error
	visit = func(m string) error {
		m = modName(m)
		if state[m] == 2 || builtin[m] {
			return nil
		}
		if state[m] == 1 {
			return fmt.Errorf("testvm: module dependency cycle at %s", m)
		}
		ko, ok := idx[m]
		if !ok {
			return fmt.Errorf("testvm: module %s not found under %s", m, modDir)
		}
		state[m] = 1
		deps, err := moduleDepends(ko)
		if err != nil {
			return fmt.Errorf("testvm: %s: %w", ko, err)
		}
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[m] = 2
		order = append(order, ko)
		return nil
	}
	for _, m := range want {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// errNoBusybox: the static busybox the guest's userland is made of is
// missing.
var errNoBusybox = errors.New("testvm: /usr/bin/busybox (busybox-static) not found")
