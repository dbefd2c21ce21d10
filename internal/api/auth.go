package api

import (
	"context"
	"net"
	"net/http"
	"strings"

	wire "github.com/blockwise/blockwise/api"
)

type trustedKey struct{}

// tokenKey carries the ID of the API token a TCP request came with, so
// what it creates (NBD tickets) dies with the token.
type tokenKey struct{}

// scopesKey carries the scopes of the request's token.
type scopesKey struct{}

// HasScope reports whether a request may use routes of scope: a trusted
// (unix socket) request may, and a token request whose token has it.
func HasScope(ctx context.Context, scope string) bool {
	if trusted, _ := ctx.Value(trustedKey{}).(bool); trusted {
		return true
	}
	scopes, _ := ctx.Value(scopesKey{}).([]string)
	for _, s := range scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// scopePrefix is the path a scoped token is limited to.
var scopePrefix = map[string]string{ScopeReplication: "/v1/replicas"}

// inScope: an unscoped token reaches every route but the scoped ones'
// (HasScope checks those); a scoped token only its scopes' paths.
func inScope(t Token, path string) bool {
	if len(t.Scopes) == 0 {
		return true
	}
	for _, sc := range t.Scopes {
		if p := scopePrefix[sc]; p != "" && (path == p || strings.HasPrefix(path, p+"/")) {
			return true
		}
	}
	return false
}

// markTrusted flags connections over a unix socket: only the socket's
// owner can connect, so they need no token.
func markTrusted(ctx context.Context, c net.Conn) context.Context {
	_, unix := c.(*net.UnixConn)
	return context.WithValue(ctx, trustedKey{}, unix)
}

// authenticated refuses, before any handler runs, a request from an
// untrusted connection without a valid bearer token.
func (s *Server) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if trusted, _ := r.Context().Value(trustedKey{}).(bool); trusted {
			next.ServeHTTP(w, r)
			return
		}
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok && s.tokens != nil {
			if t, valid := s.tokens.Check(strings.TrimSpace(secret)); valid && inScope(t, r.URL.Path) {
				s.log.Debug("api token accepted", "token", t.ID)
				ctx := context.WithValue(context.WithValue(r.Context(), tokenKey{}, t.ID), scopesKey{}, t.Scopes)
				next.ServeHTTP(w, r.WithContext(ctx))
				return
			} else if valid {
				writeProblem(w, wire.Problem{Type: wire.ProblemUnauthorized, Title: titles[wire.ProblemUnauthorized],
					Status: http.StatusForbidden, Detail: "this token's scope does not reach " + r.URL.Path})
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="blockwise"`)
		writeProblem(w, wire.Problem{Type: wire.ProblemUnauthorized, Title: titles[wire.ProblemUnauthorized],
			Status: http.StatusUnauthorized, Detail: "a valid bearer token is required over TCP"})
	})
}
