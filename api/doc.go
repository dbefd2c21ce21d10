// Package api is the wire contract of blockwise's host control API (/v1):
// the JSON documents exchanged, the problem type codes, and the OpenAPI
// document describing the routes (openapi.json, embedded as OpenAPI).
//
// The server (internal/api) and the Go client (package client) both use
// these types, so the two cannot drift apart silently; the OpenAPI
// document is checked against the server's routes by a test.
package api
