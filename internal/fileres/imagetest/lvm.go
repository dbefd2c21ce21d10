package imagetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// LVMExtent is the volume group's extent size (LVM's default).
const LVMExtent = 4 << 20

// LVM makes the partition at off (sizeMiB) of disk img an LVM2 physical
// volume of a new volume group vg, with the real tools on a loop device,
// and gives the group a logical volume "root" of 8 extents in two
// segments laid out backwards (extents 0-3 on PE 5-8, 4-7 on PE 1-4), so
// a reader that ignores the segment map reads garbage. lvcreate needs
// device-mapper, which a sandbox may lack, so the logical volume is
// written with vgcfgrestore (LVM's own metadata writer). lvImage (32 MiB)
// is then copied into the extents.
func LVM(t testing.TB, img string, off int64, sizeMiB int, vg, lvImage string) {
	t.Helper()
	NeedTools(t, "losetup", "pvcreate", "vgcreate", "vgcfgbackup", "vgcfgrestore", "pvs")
	sys := t.TempDir()
	must(t, os.WriteFile(filepath.Join(sys, "lvm.conf"), []byte("backup {\nbackup = 0\narchive = 0\n}\n"), 0o644))
	env := []string{"LVM_SYSTEM_DIR=" + sys, "LVM_SUPPRESS_FD_WARNINGS=1"}
	loop := strings.TrimSpace(Run(t, nil, "losetup", "-f", "--show", "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(int64(sizeMiB)<<20), img))
	defer Run(t, nil, "losetup", "-d", loop)
	Run(t, env, "pvcreate", "-ff", "-y", loop)
	Run(t, env, "vgcreate", "-s", "4m", vg, loop)
	pe, err := strconv.ParseInt(strings.TrimSpace(Run(t, env, "pvs", "--noheadings", "-o", "pe_start", "--units", "b", "--nosuffix", loop)), 10, 64)
	must(t, err)
	backup := filepath.Join(sys, "vg.txt")
	Run(t, env, "vgcfgbackup", "-f", backup, vg)
	text, err := os.ReadFile(backup)
	must(t, err)
	s := string(text)
	i := strings.LastIndex(s, "}")
	s = s[:i] + lvText + s[i:]
	must(t, os.WriteFile(backup, []byte(s), 0o644))
	Run(t, env, "vgcfgrestore", "-f", backup, vg)
	dataStart := off + pe
	for _, seg := range []struct{ lv, pe int64 }{{0, 5}, {4, 1}} {
		Run(t, nil, "dd", "if="+lvImage, "of="+img, "bs=4M", fmt.Sprintf("skip=%d", seg.lv), "count=4", "conv=notrunc,sparse", "status=none",
			"oflag=seek_bytes", fmt.Sprintf("seek=%d", dataStart+seg.pe*LVMExtent))
	}
}

const lvText = `
	logical_volumes {
		root {
			id = "Tst000-0000-0000-0000-0000-0000-000001"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 2
			segment1 {
				start_extent = 0
				extent_count = 4
				type = "striped"
				stripe_count = 1
				stripes = [
					"pv0", 5
				]
			}
			segment2 {
				start_extent = 4
				extent_count = 4
				type = "striped"
				stripe_count = 1
				stripes = [
					"pv0", 1
				]
			}
		}
	}
`

// LVMText is a volume group's metadata with the logical volume LVM
// writes, for seeding the metadata parser's fuzzer.
func LVMText() string {
	return "bwtest {\n\tid = \"x\"\n\tseqno = 2\n\textent_size = 8192\n\tphysical_volumes {\n\t\tpv0 {\n\t\t\tid = \"2ApJd2-Fl83-mWui-G07z-OyTu-sK3e-Peacak\"\n\t\t\tpe_start = 2048\n\t\t\tpe_count = 11\n\t\t}\n\t}\n" + lvText + "}\n"
}
