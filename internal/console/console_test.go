package console

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/jobs"
)

func TestOverviewTiming(t *testing.T) {
	dir := t.TempDir()
	ds, err := disk.OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := host.New(ds)
	defer h.Close()
	st, err := jobs.Open(filepath.Join(dir, "jobs.db"), jobs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	for i := range 1000 {
		if _, err := h.Create(fmt.Sprintf("d%04d", i), 1<<20, disk.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("create: %s", time.Since(start))
	c := New(Options{Host: h, Jobs: st, Datastore: dir})
	for range 3 {
		start = time.Now()
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequest("GET", "/console/api/overview", nil))
		t.Logf("overview: %d, %d bytes, %s", rec.Code, rec.Body.Len(), time.Since(start))
	}
	_ = os.Getenv
}
