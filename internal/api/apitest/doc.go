// Package apitest starts a real host API on a temporary datastore for
// tests of the server, the client and their users: no mocks, the real
// disk engine behind a real unix socket.
package apitest
