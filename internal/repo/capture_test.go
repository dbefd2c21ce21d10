package repo

import (
	"context"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/mem"
)

// captureBackend records the last saved object into *dst (fuzz seeds).
func captureBackend(dst *[]byte) backend.Backend { return &capture{Backend: mem.New(), dst: dst} }

type capture struct {
	backend.Backend
	dst *[]byte
}

func (c *capture) Save(ctx context.Context, h backend.Handle, data []byte) error {
	*c.dst = append([]byte(nil), data...)
	return c.Backend.Save(ctx, h, data)
}
