package dxtratest

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint names a group of calls for the failure-injection and counting knobs
// (FailNext, SetDown, Calls). It is a plain string value.
type Endpoint string

// SignInPAT, TokenRefresh and GraphQL are the endpoints the knobs address.
const (
	SignInPAT    Endpoint = "signin/pat" // POST {prefix}/signin/pat
	TokenRefresh Endpoint = "token"      // POST {prefix}/token
	GraphQL      Endpoint = "graphql"    // every HTTP request on the API server
)

// DefaultPrefix and the other Default constants are what NewServer uses for zero Options fields.
const (
	DefaultPrefix          = "/v1"
	DefaultAccessTokenTTL  = 900 * time.Second
	DefaultRefreshTokenTTL = 30 * 24 * time.Hour
	DefaultRole            = "user"
	DefaultRecordLimit     = 10000
	DefaultTickInterval    = time.Second
	DefaultInitTimeout     = 3 * time.Second
)

// Options configures NewServer. The zero value gives a Dxtra-like server: prefix /v1,
// 900 s access tokens, roles ["me","user"], default role "user". NewServer copies what
// it needs; Now must be safe for concurrent use.
type Options struct {
	Prefix          string           // auth API prefix; "" → "/v1" unless BarePrefix
	BarePrefix      bool             // serve the auth endpoints with no prefix (a bare Hasura Auth container)
	AccessTokenTTL  time.Duration    // truncated to whole seconds (at least 1 s); 0 → 900 s
	RefreshTokenTTL time.Duration    // sliding refresh-token lifetime; 0 → 30 days
	Roles           []string         // allowed roles; nil → ["me","user"]; the default role is always added
	DefaultRole     string           // "" → "user"
	Now             func() time.Time // clock for issuing and checking tokens; nil → time.Now
	Addr            string           // listen address; "" → "127.0.0.1:0"; a fixed port serves auth and API on one listener
	RecordLimit     int              // API requests kept by Requests (oldest dropped); 0 → 10000; <0 → none recorded
	TickInterval    time.Duration    // WebSocket subscription message period; 0 → 1 s
	InitTimeout     time.Duration    // graphql-transport-ws connection_init timeout (close 4408); 0 → 3 s
}

// Server is a running fake: an auth service on AuthURL and a GraphQL API on APIURL.
// All methods are safe for concurrent use.
type Server struct {
	AuthURL string // base URL of the auth service, prefix NOT included, e.g. "http://127.0.0.1:41234"
	APIURL  string // base URL of the GraphQL API, e.g. "http://127.0.0.1:41235"

	prefix      string
	ttlSec      int64
	rtTTL       time.Duration
	roles       []string
	defaultRole string
	now         func() time.Time
	recordLimit int
	tick        time.Duration
	initTimeout time.Duration

	userID   string
	userJSON []byte // the session's "user" object, encoded once

	key      atomic.Pointer[signingKey]
	verified sync.Map // jwt string → *tokenInfo (signature verified with key gen)
	revoked  sync.Map // jwt string → struct{}

	gateway  atomic.Bool
	disabled atomic.Bool
	conceal  atomic.Bool

	mu      sync.Mutex // guards the fields below
	pats    map[string]*patState
	refresh map[string]*refreshState
	lastIat int64
	fail    map[Endpoint]*failure
	down    map[Endpoint]bool
	calls   map[Endpoint]int

	recMu      sync.Mutex
	reqs       []Request // ring buffer once full; reqStart is the oldest
	reqStart   int
	wsSessions []*WSSession

	authHandler http.Handler
	apiHandler  http.Handler

	baseCtx    context.Context
	baseCancel context.CancelFunc
	servers    []*http.Server
	serveWG    sync.WaitGroup
	track      tracker
	closeOnce  sync.Once
}

type signingKey struct {
	gen uint64
	b   []byte
}

type patState struct{}

type refreshState struct {
	id      string
	pat     string
	expires time.Time
}

type failure struct {
	n          int
	status     int
	retryAfter string
}

// NewServer starts the auth service and the GraphQL API on loopback (two listeners, or
// one when opts.Addr names a fixed port) and returns the running Server. It panics if it
// cannot listen, like httptest.NewServer. Call Close when done.
func NewServer(opts Options) *Server {
	s := newServer(opts)
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		panic(fmt.Sprintf("dxtratest: bad listen address %q: %v", addr, err))
	}
	s.baseCtx, s.baseCancel = context.WithCancel(context.Background())
	if port == "0" || port == "" {
		s.AuthURL = s.serve(addr, s.AuthHandler())
		s.APIURL = s.serve(addr, s.APIHandler())
	} else {
		s.AuthURL = s.serve(addr, s.combinedHandler())
		s.APIURL = s.AuthURL
	}
	return s
}

func newServer(opts Options) *Server {
	s := &Server{
		prefix:      normalizePrefix(opts.Prefix, opts.BarePrefix),
		rtTTL:       opts.RefreshTokenTTL,
		defaultRole: opts.DefaultRole,
		now:         opts.Now,
		recordLimit: opts.RecordLimit,
		tick:        opts.TickInterval,
		initTimeout: opts.InitTimeout,
		pats:        make(map[string]*patState),
		refresh:     make(map[string]*refreshState),
		fail:        make(map[Endpoint]*failure),
		down:        make(map[Endpoint]bool),
		calls:       make(map[Endpoint]int),
	}
	ttl := opts.AccessTokenTTL
	if ttl == 0 {
		ttl = DefaultAccessTokenTTL
	}
	s.ttlSec = max(int64(ttl/time.Second), 1)
	if s.rtTTL <= 0 {
		s.rtTTL = DefaultRefreshTokenTTL
	}
	if s.defaultRole == "" {
		s.defaultRole = DefaultRole
	}
	roles := opts.Roles
	if roles == nil {
		roles = []string{"me", "user"}
	}
	s.roles = append([]string(nil), roles...)
	if !contains(s.roles, s.defaultRole) {
		s.roles = append(s.roles, s.defaultRole)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.recordLimit == 0 {
		s.recordLimit = DefaultRecordLimit
	}
	if s.tick <= 0 {
		s.tick = DefaultTickInterval
	}
	if s.initTimeout <= 0 {
		s.initTimeout = DefaultInitTimeout
	}
	s.key.Store(&signingKey{gen: 1, b: randomBytes(32)})
	s.userID = newUUID()
	s.userJSON = s.encodeUser()
	s.authHandler = s.track.wrap(http.HandlerFunc(s.serveAuth))
	s.apiHandler = s.track.wrap(http.HandlerFunc(s.serveAPI))
	return s
}

func normalizePrefix(p string, bare bool) string {
	if bare {
		return ""
	}
	if p == "" {
		return DefaultPrefix
	}
	p = strings.TrimRight(p, "/")
	if p != "" && !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

func (s *Server) serve(addr string, h http.Handler) string {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic(fmt.Sprintf("dxtratest: failed to listen on %s: %v", addr, err))
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.baseCtx },
	}
	s.servers = append(s.servers, srv)
	s.serveWG.Go(func() { _ = srv.Serve(l) })
	return "http://" + l.Addr().String()
}

// combinedHandler routes the auth endpoints to the auth handler and everything else to
// the API (used when both share one fixed-port listener).
func (s *Server) combinedHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.authEndpoint(r.URL.Path); ok {
			s.authHandler.ServeHTTP(w, r)
			return
		}
		s.apiHandler.ServeHTTP(w, r)
	})
}

// Close stops both servers, cutting any request still in flight (slow and streamed
// responses and WebSockets end at once), and waits until every handler has returned.
// It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.baseCancel != nil {
			s.baseCancel()
		}
		s.track.close()
		for _, srv := range s.servers {
			_ = srv.Close()
		}
		s.serveWG.Wait()
		s.track.wait()
	})
}

// AuthBaseURL returns AuthURL with the auth prefix appended (e.g.
// "http://127.0.0.1:41234/v1"), the base for /signin/pat and /token.
func (s *Server) AuthBaseURL() string { return s.AuthURL + s.prefix }

// AuthHandler returns the auth service's handler, for mounting it elsewhere (it shares
// state with the running Server).
func (s *Server) AuthHandler() http.Handler { return s.authHandler }

// APIHandler returns the GraphQL API's handler, for mounting it elsewhere (it shares
// state with the running Server).
func (s *Server) APIHandler() http.Handler { return s.apiHandler }

// UserID returns the id of the fake's single user (the JWT sub and x-hasura-user-id).
func (s *Server) UserID() string { return s.userID }

// Roles returns the user's allowed roles as they appear in tokens and sessions.
func (s *Server) Roles() []string { return append([]string(nil), s.roles...) }

// NewPAT mints a valid Personal Access Token (a lowercase UUID v4) for the user.
func (s *Server) NewPAT() string {
	pat := newUUID()
	s.mu.Lock()
	s.pats[pat] = &patState{}
	s.mu.Unlock()
	return pat
}

// RevokePAT makes pat unknown: /signin/pat answers 401 invalid-pat for it. As a test
// knob (the real server keeps them) it also revokes every refresh token issued from it.
func (s *Server) RevokePAT(pat string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pats, pat)
	for rt, st := range s.refresh {
		if st.pat == pat {
			delete(s.refresh, rt)
		}
	}
}

// RevokeAccessToken makes the API reject jwt with invalid-jwt (JWSInvalidSignature), as
// if it had been signed with another key.
func (s *Server) RevokeAccessToken(jwt string) { s.revoked.Store(jwt, struct{}{}) }

// RotateSigningKey replaces the signing key: every JWT issued so far is rejected by the
// API with invalid-jwt (JWSInvalidSignature); new ones are signed with the new key.
func (s *Server) RotateSigningKey() {
	for {
		old := s.key.Load()
		if s.key.CompareAndSwap(old, &signingKey{gen: old.gen + 1, b: randomBytes(32)}) {
			break
		}
	}
	s.verified.Clear()
}

// SetUserDisabled disables (or re-enables) the user: both auth endpoints answer 401
// disabled-user for otherwise valid credentials, which keep working once re-enabled.
// Tokens already issued stay valid at the API, as with the real services.
func (s *Server) SetUserDisabled(disabled bool) { s.disabled.Store(disabled) }

// SetConcealErrors turns AUTH_CONCEAL_ERRORS on or off: invalid-pat,
// invalid-refresh-token and disabled-user become 400 invalid-request "The request
// payload is incorrect". Validation errors are unchanged.
func (s *Server) SetConcealErrors(conceal bool) { s.conceal.Store(conceal) }

// SetGatewayMode makes the API answer a rejected JWT (invalid-jwt, invalid-headers) with
// HTTP 401 instead of Hasura's own status, as a gateway in front of Hasura would.
func (s *Server) SetGatewayMode(on bool) { s.gateway.Store(on) }

// FailNext makes the next n calls to ep answer status before any other processing.
// A 429 has an empty body (and a Retry-After header only when retryAfter is not "");
// other statuses have a JSON error body: on the auth endpoints
// {"error":"internal-server-error","message":"Internal server error","status":<status>},
// on the API Hasura's {"path":"$","error":...,"code":"unexpected"}. Calls add up.
func (s *Server) FailNext(ep Endpoint, n int, status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.fail, ep)
		return
	}
	s.fail[ep] = &failure{n: n, status: status, retryAfter: retryAfter}
}

// SetDown makes every call to ep answer 503 (with the FailNext 5xx body) until it is
// cleared with SetDown(ep, false).
func (s *Server) SetDown(ep Endpoint, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down[ep] = down
}

// Calls returns how many calls ep has received, failed and refused ones included. For
// the auth endpoints only POSTs to the endpoint's path count; for GraphQL every HTTP
// request on the API server counts (WebSocket upgrades included).
func (s *Server) Calls(ep Endpoint) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[ep]
}

// countAndFail counts a call to ep and reports the injected failure, if any.
func (s *Server) countAndFail(ep Endpoint) (status int, retryAfter string, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[ep]++
	if s.down[ep] {
		return http.StatusServiceUnavailable, "", true
	}
	f := s.fail[ep]
	if f == nil {
		return 0, "", false
	}
	f.n--
	if f.n <= 0 {
		delete(s.fail, ep)
	}
	return f.status, f.retryAfter, true
}

// encodeUser renders the session's user object with keys in alphabetical order, as the
// real server emits them.
func (s *Server) encodeUser() []byte {
	email := "user-" + s.userID[:8] + "@example.com"
	sum := md5.Sum([]byte(email))
	u := struct {
		ActiveMfaType       *string         `json:"activeMfaType"`
		AvatarURL           string          `json:"avatarUrl"`
		CreatedAt           string          `json:"createdAt"`
		DefaultRole         string          `json:"defaultRole"`
		DisplayName         string          `json:"displayName"`
		Email               string          `json:"email"`
		EmailVerified       bool            `json:"emailVerified"`
		ID                  string          `json:"id"`
		IsAnonymous         bool            `json:"isAnonymous"`
		Locale              string          `json:"locale"`
		Metadata            json.RawMessage `json:"metadata"`
		PhoneNumberVerified bool            `json:"phoneNumberVerified"`
		Roles               []string        `json:"roles"`
	}{
		AvatarURL:   "https://www.gravatar.com/avatar/" + hex.EncodeToString(sum[:]) + "?d=blank&r=g",
		CreatedAt:   s.now().UTC().Format(time.RFC3339Nano),
		DefaultRole: s.defaultRole,
		DisplayName: email,
		Email:       email,
		ID:          s.userID,
		Locale:      "en",
		Metadata:    json.RawMessage("null"),
		Roles:       s.roles,
	}
	b, err := json.Marshal(u)
	if err != nil {
		panic(err)
	}
	return b
}

// tracker counts running handlers so that Close can wait for them, and refuses new ones
// once closed.
type tracker struct {
	mu     sync.Mutex
	cond   *sync.Cond
	n      int
	closed bool
}

func (t *tracker) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !t.enter() {
			http.Error(w, "server closed", http.StatusServiceUnavailable)
			return
		}
		defer t.leave()
		h.ServeHTTP(w, r)
	})
}

func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.cond != nil {
		t.cond.Broadcast()
	}
}

func (t *tracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}

func (t *tracker) wait() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cond == nil {
		t.cond = sync.NewCond(&t.mu)
	}
	for t.n > 0 {
		t.cond.Wait()
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return b
}

// newUUID returns a random lowercase UUID v4.
func newUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var buf [36]byte
	hex.Encode(buf[0:8], b[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], b[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], b[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], b[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], b[10:])
	return string(buf[:])
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
