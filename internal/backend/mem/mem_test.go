package mem_test

import (
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/mem"
)

func TestConformance(t *testing.T) {
	backendtest.RunTests(t, func(*testing.T) backend.Backend { return mem.New() })
}
