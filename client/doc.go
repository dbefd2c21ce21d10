// Package client is the Go client of the blockwise host's control API
// (/v1): disks, snapshots, QueryChangedDiskAreas, NBD export URIs and
// tasks. It is what backup tools import.
//
// A host is reached as unix:///path/to/api.sock (trusted by file
// permissions, no token) or https://host:port (bearer token required, CA
// optional). Errors from the host are *Error values that match the
// package's sentinels with errors.Is:
//
//	_, err := c.QueryChangedAreas(ctx, "vm1", "snap-2", lastChangeID, 0)
//	if errors.Is(err, client.ErrChangeIDInvalid) {
//		// fall back to a full backup
//	}
package client
