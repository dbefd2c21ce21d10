package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/minio/minio-go/v7"
)

func TestMapErr(t *testing.T) {
	resp := func(status int, code string) error { return minio.ErrorResponse{StatusCode: status, Code: code} }
	tests := []struct {
		err  error
		want error // nil: none of the sentinels
	}{
		{resp(404, "NoSuchKey"), backend.ErrNotFound},
		{resp(404, ""), backend.ErrNotFound},
		{resp(404, "NoSuchBucket"), nil},
		{resp(412, "PreconditionFailed"), backend.ErrExists},
		{resp(503, "SlowDown"), backend.ErrTransient},
		{resp(429, ""), backend.ErrTransient},
		{resp(500, "InternalError"), backend.ErrTransient},
		{resp(504, ""), backend.ErrTransient},
		{resp(409, "ConditionalRequestConflict"), backend.ErrTransient},
		{resp(400, "RequestTimeout"), backend.ErrTransient},
		{resp(403, "AccessDenied"), nil},
		{resp(400, "InvalidArgument"), nil},
		{&url.Error{Op: "Put", URL: "http://x", Err: syscall.ECONNREFUSED}, backend.ErrTransient},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), backend.ErrTransient},
		{io.ErrUnexpectedEOF, backend.ErrTransient},
		{&net.OpError{Op: "dial", Err: errors.New("i/o timeout")}, backend.ErrTransient},
		{errors.New("something else"), nil},
	}
	sentinels := []error{backend.ErrNotFound, backend.ErrExists, backend.ErrTransient}
	for _, tc := range tests {
		got := mapErr("op", "x", tc.err)
		for _, s := range sentinels {
			if errors.Is(got, s) != (s == tc.want) {
				t.Errorf("%v: mapped to %v; is %v = %v", tc.err, got, s, errors.Is(got, s))
			}
		}
		if tc.want == backend.ErrTransient && !backend.IsTransient(got) {
			t.Errorf("%v: not IsTransient", tc.err)
		}
	}
	if err := mapErr("op", "x", context.Canceled); !errors.Is(err, context.Canceled) || backend.IsTransient(err) {
		t.Errorf("cancel: %v", err)
	}
}
