package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/minio/minio-go/v7"
)

// mapErr turns minio-go errors into the contract's sentinels: a missing
// key is ErrNotFound, a failed If-None-Match is ErrExists, and throttling,
// server errors and network failures are ErrTransient so backend.Retry
// retries them. Everything else passes through, wrapped.
func mapErr(op string, what any, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, backend.ErrNotFound), errors.Is(err, backend.ErrExists),
		errors.Is(err, backend.ErrInvalid), errors.Is(err, backend.ErrTransient):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("s3: %s %v: %w", op, what, err)
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchKey || (resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket):
		return fmt.Errorf("s3: %s %v: %w", op, what, backend.ErrNotFound)
	case resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed":
		return fmt.Errorf("s3: %s %v: %w", op, what, backend.ErrExists)
	case isTransient(resp, err):
		return fmt.Errorf("s3: %s %v: %w: %w", op, what, backend.ErrTransient, err)
	}
	return fmt.Errorf("s3: %s %v: %w", op, what, err)
}

// transientCodes are S3 error codes that say "try again": throttling,
// a busy or failing server, a request that timed out on the server side,
// and AWS's 409 for two conditional writes racing on one key (the retry
// then sees 412, which Retry resolves by comparing content).
var transientCodes = map[string]bool{
	"SlowDown": true, "RequestTimeout": true, "InternalError": true,
	"ServiceUnavailable": true, "ConditionalRequestConflict": true,
	"OperationAborted": true,
}

func isTransient(resp minio.ErrorResponse, err error) bool {
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	if transientCodes[resp.Code] {
		return true
	}
	if resp.StatusCode != 0 {
		return false // the server answered, and not with "try again"
	}
	return isNetworkError(err)
}

// isNetworkError: the request never got an answer (refused, reset, cut
// short, timed out): the server may be restarting or the link flaky.
func isNetworkError(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE)
}
