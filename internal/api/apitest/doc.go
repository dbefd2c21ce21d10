// Package apitest is the one host test harness: it starts a real host on
// a temporary datastore — the disk engine, the REST API on a unix socket
// and, when asked, NBD servers on a unix socket and on TCP paths with
// STARTTLS — for the tests of the API, the client, the host, transport,
// backup and their users: no mocks. Test support only: production code
// never imports it.
package apitest
