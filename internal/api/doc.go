// Package api serves the host's control API (/v1, see package
// github.com/blockwise/blockwise/api for the wire types and the OpenAPI
// document) over HTTP, on top of internal/host.
//
// Security model: a request arriving over the unix socket is trusted (the
// socket is 0600 in the datastore, so file permissions decide); one over
// TCP must carry a bearer token whose SHA-256 is listed in the datastore's
// tokens.json (TLS is enforced by the caller, cmd/blockwise serve).
//
// NBD over TCP admits ticket holders only: Tickets issues, per export, a
// TLS client certificate signed by the datastore's CA (pki.go, DATASTORE/pki)
// and checks it for every new connection, at the handshake
// (VerifyConnection) and for each export the client names (the
// nbd.ServerOptions.Authorize hook): alive, not expired, its API token
// still listed, its export still there, and the export its own.
//
// Long operations (snapshot consolidation) are tasks kept in a registry
// so a client can poll or long-poll them by ID; the engine's disk.Task
// gives progress and the result.
//
// Disk leases (/v1/disks/{disk}/lease) are kept by internal/host in
// memory: one holder per disk, expiring unless renewed, so a backup killed
// without releasing its lease blocks the disk at most for its TTL.
package api
