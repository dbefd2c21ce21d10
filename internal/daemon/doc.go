// Package daemon is the host process: what `blockwise serve` runs. It
// owns the process's lifetime and wires the layers together; it holds no
// logic of its own beyond that.
//
// Vocabulary:
//
//   - Options: every setting of the host (datastore, listeners, TLS,
//     shutdown deadline, logger); no package variables.
//   - Daemon: one running host. New opens the datastore, takes its
//     serve.lock (one host per datastore), builds the engine (host.Host),
//     the ticket authority (api.Tickets), the NBD servers and the API
//     server, and binds every listener, so that an address in use or a
//     bad certificate is an error before anything is served. Serve runs
//     them until its context ends or one fails, then stops gracefully.
//   - Listeners: NBD on DATASTORE/nbd.sock (0600, or 0660 with a group;
//     no ticket needed) and on TCP only when asked, TLS with a ticket (a
//     client certificate from the host's CA) unless explicitly insecure;
//     the API on DATASTORE/api.sock (0600) and on TCP with TLS and bearer
//     tokens. /metrics is served by the API.
//   - Graceful stop: API requests drain first (they may use disks), then
//     NBD connections finish their in-flight requests, then services stop,
//     then the disks are flushed and closed, all within
//     Options.ShutdownTimeout (30 s by default).
//   - Service: the place later parts of the host hang from (the backup
//     scheduler, replication): registered before Serve, started after the
//     listeners, stopped before the disks close. A service sees the host
//     through Daemon.Host (and its API through client/ if it prefers).
//
// The per-attachment NBD servers of hot-add still live in internal/api
// (attach.go): they are made and removed by API requests.
package daemon
