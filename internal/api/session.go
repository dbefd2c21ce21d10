package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"sync"
	"time"

	wire "github.com/blockwise/blockwise/api"
)

// The web console's sessions: a browser logs in over TCP with an API
// token (or a one-time link from `blockwise console`) and gets a session
// cookie (Secure, HttpOnly, SameSite=Strict); every state-changing
// request it makes must carry the session's CSRF token in CSRFHeader.
const (
	SessionCookie = "bw_session"
	CSRFHeader    = "X-CSRF-Token"
	sessionTTL    = 12 * time.Hour
	linkTTL       = 5 * time.Minute
	maxSessions   = 1000
)

type session struct {
	csrf    string
	tokenID string // the API token it was opened with ("" for a link)
	expires time.Time
}

type sessions struct {
	mu    sync.Mutex
	m     map[string]*session  // by the SHA-256 of the cookie's value
	links map[string]time.Time // one-time codes (by their SHA-256) → expiry
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// open starts a session and returns the cookie's value.
func (ss *sessions) open(tokenID string) string {
	id := randomHex(32)
	now := time.Now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[string]*session{}
	}
	for k, s := range ss.m { // bound memory: expired first
		if now.After(s.expires) || len(ss.m) >= maxSessions {
			delete(ss.m, k)
		}
	}
	ss.m[digest(id)] = &session{csrf: randomHex(32), tokenID: tokenID, expires: now.Add(sessionTTL)}
	return id
}

func (ss *sessions) get(id string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[digest(id)]
	if s == nil || time.Now().After(s.expires) {
		return nil
	}
	return s
}

func (ss *sessions) close(id string) {
	ss.mu.Lock()
	delete(ss.m, digest(id))
	ss.mu.Unlock()
}

// link makes a one-time login code.
func (ss *sessions) link() (string, time.Time) {
	code := randomHex(24)
	exp := time.Now().Add(linkTTL)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.links == nil {
		ss.links = map[string]time.Time{}
	}
	for k, e := range ss.links {
		if time.Now().After(e) {
			delete(ss.links, k)
		}
	}
	ss.links[digest(code)] = exp
	return code, exp
}

// useLink consumes a code: true once, within its lifetime.
func (ss *sessions) useLink(code string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := digest(code)
	exp, ok := ss.links[k]
	delete(ss.links, k)
	return ok && time.Now().Before(exp)
}

// unsafeMethod: a request that may change state.
func unsafeMethod(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

// crossSite: a browser says the request comes from another site (a
// page elsewhere posting to this host), which no caller of the API or
// the console does.
//
// A browser that sends Sec-Fetch-Site (no page can forge it) is taken at
// its word: the Origin of a form posted from a page whose referrer policy
// is no-referrer (the console's) can be "null" even on the same site,
// which refused the first login of a fresh browser.
func crossSite(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
		return s != "same-origin" && s != "none"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err != nil || u.Host != r.Host
	}
	return false
}

// sessionAuth admits a request carrying a live session cookie; a
// state-changing one must also carry the session's CSRF token.
func (s *Server) sessionAuth(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return false
	}
	sess := s.sessions.get(c.Value)
	if sess == nil || (sess.tokenID != "" && (s.tokens == nil || !s.tokens.Has(sess.tokenID))) {
		return false
	}
	if unsafeMethod(r.Method) && (subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(sess.csrf)) != 1 || crossSite(r)) {
		writeProblem(w, wire.Problem{Type: wire.ProblemForbidden, Title: titles[wire.ProblemForbidden], Status: http.StatusForbidden,
			Detail: "a state-changing request of the console needs its CSRF token in " + CSRFHeader})
		return true
	}
	ctx := context.WithValue(r.Context(), tokenKey{}, sess.tokenID)
	next.ServeHTTP(w, r.WithContext(context.WithValue(ctx, sessionKey{}, sess)))
	return true
}

type sessionKey struct{}

// Operator reports whether a request comes from the host's operator: the
// unix socket, or a console session (opened with an unscoped token or a
// link the socket's owner made). Services let an operator reach routes a
// scoped token guards (replication's recovery operations).
func Operator(ctx context.Context) bool {
	if trusted, _ := ctx.Value(trustedKey{}).(bool); trusted {
		return true
	}
	_, ok := ctx.Value(sessionKey{}).(*session)
	return ok
}

func setSessionCookie(w http.ResponseWriter, id string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// login: POST /console/login with a form field token, or GET
// /console/login?code=CODE (a one-time link); either sets the session
// cookie and sends the browser to the console.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	tokenID, ok := "", false
	switch {
	case r.Method == http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		if crossSite(r) {
			break
		}
		if s.tokens != nil {
			var t Token
			// A scoped token (a peer's replication token) reaches its
			// routes only: it opens no console session, which reaches all.
			if t, ok = s.tokens.Check(r.PostFormValue("token")); ok && len(t.Scopes) == 0 {
				tokenID = t.ID
			} else {
				ok = false
			}
		}
	case r.URL.Query().Get("code") != "":
		ok = s.sessions.useLink(r.URL.Query().Get("code"))
	default:
		s.console.Login(w, r, "")
		return
	}
	if !ok {
		s.log.Warn("console login refused", "remote", r.RemoteAddr)
		w.WriteHeader(http.StatusUnauthorized)
		s.console.Login(w, r, "That token or link is not valid (or was used already).")
		return
	}
	setSessionCookie(w, s.sessions.open(tokenID), int(sessionTTL.Seconds()))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the session (a state-changing request: CSRF applies).
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		s.sessions.close(c.Value)
	}
	setSessionCookie(w, "", -1)
	w.WriteHeader(http.StatusNoContent)
}

// sessionInfo: GET /console/session tells the console's script its CSRF
// token (none over the unix socket, which needs none).
func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request) {
	csrf := ""
	if sess, ok := r.Context().Value(sessionKey{}).(*session); ok {
		csrf = sess.csrf
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{"csrf": csrf})
}

// createLink: POST /v1/console/links makes a one-time login link.
func (s *Server) createLink(r *http.Request) (int, any, error) {
	code, exp := s.sessions.link()
	l := wire.ConsoleLink{Code: code, Path: "/console/login?code=" + code, Expires: exp, URLs: []string{}}
	for _, base := range s.consoleURLs {
		l.URLs = append(l.URLs, base+l.Path)
	}
	return http.StatusCreated, l, nil
}
