package transport

import (
	"crypto/rand"
	"math/big"
	"testing"

	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/disk"
)

// testHost is a real host (apitest): API on a unix socket, NBD on a
// unix socket and on two TCP addresses, as `blockwise serve --nbd-tcp A
// --nbd-tcp B` runs it: TLS with a ticket (a client certificate from the
// datastore's CA, which also signs the server's), or, insecure, as with
// --nbd-tcp-insecure-no-auth: anyone, TLS optional. env is transport's
// view of it.
type testHost struct {
	*apitest.Env
	env Env
}

// startHost starts a host with the secure default: TCP needs tickets.
func startHost(t *testing.T) *testHost { return startHostWith(t, false) }

func startHostWith(t *testing.T, insecure bool) *testHost {
	t.Helper()
	th := &testHost{Env: apitest.Start(t, apitest.Options{NBD: true, TCPPaths: 2, Tickets: !insecure, Insecure: insecure})}
	th.env = Env{Client: th.Client, HostURL: "unix://" + th.Sock, Datastore: th.Dir, Conns: 2}
	return th
}

// makeDisk creates a disk with scattered random data and returns it.
func (th *testHost) makeDisk(t *testing.T, name string, size int64) *disk.Disk {
	t.Helper()
	d, err := th.Host.Create(name, size, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, d, size, 40)
	return d
}

func writeRandom(t *testing.T, d *disk.Disk, size int64, n int) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for i := 0; i < n; i++ {
		rand.Read(buf)
		off := mrand(size/4096-16) * 4096
		if _, err := d.WriteAt(buf[:4096*(1+mrand(15))], off); err != nil {
			t.Fatal(err)
		}
	}
}

func mrand(n int64) int64 {
	v, _ := rand.Int(rand.Reader, big.NewInt(n))
	return v.Int64()
}

func diskOptions() disk.Options { return disk.Options{} }
