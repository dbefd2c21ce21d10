package client

import (
	"context"
	"errors"

	wire "github.com/blockwise/blockwise/api"
)

// ErrMiscompare: a compare-and-write found other bytes than expected and
// wrote nothing (409 miscompare).
var ErrMiscompare = errors.New("compare-and-write miscompare")

func init() { sentinels[wire.ProblemMiscompare] = []error{ErrMiscompare} }

// Offload documents.
type (
	Offload                = wire.Offload
	DatastoreSpace         = wire.DatastoreSpace
	CompareAndWriteRequest = wire.CompareAndWriteRequest
)

// CompareAndWrite writes data at off of the live disk if and only if the
// disk holds exactly expected there, atomically against every other
// writer (NBD included). Lengths are equal multiples of 512, at most
// HostInfo.Offload.CompareAndWriteMax. On a miscompare nothing is written,
// the error matches ErrMiscompare and current holds the bytes the host
// compared against; otherwise current is nil.
func (c *Client) CompareAndWrite(ctx context.Context, diskName string, off int64, expected, data []byte) (current []byte, err error) {
	req := wire.CompareAndWriteRequest{Offset: off, Expected: expected, New: data}
	err = c.do(ctx, "POST", "/v1/disks/"+esc(diskName)+"/compare-and-write", req, nil)
	var e *Error
	if errors.As(err, &e) && e.Type == wire.ProblemMiscompare {
		return e.Current, err
	}
	return nil, err
}

// Datastore reports the datastore's capacity, use, provisioned bytes and
// whether its use is above the host's soft threshold.
func (c *Client) Datastore(ctx context.Context) (*DatastoreSpace, error) {
	var out DatastoreSpace
	return &out, c.do(ctx, "GET", "/v1/datastore", nil, &out)
}
