// Package proxy is dxtra-proxy's request path: an http.Handler, built on
// httputil.ReverseProxy, that forwards every request to the Dxtra GraphQL API
// (SPEC behaviour 1–8).
//
// For each request it
//   - refuses what must not be forwarded: CONNECT and absolute-form targets, paths with
//     dot segments, a Host outside the allow-list (DNS rebinding), an Origin outside the
//     allow-list (CSRF), a role outside the allow-list, two X-Hasura-Role headers, a
//     body over the limit — before anything reaches the upstream;
//   - answers CORS preflights for allowed origins itself;
//   - removes the caller's credentials, Hasura session headers and forwarding headers,
//     and sets exactly one Authorization: Bearer <JWT> and one X-Hasura-Role;
//   - streams the answer back, and when the upstream rejects the token (HTTP 401, or
//     Hasura's 200 invalid-jwt error, spotted without holding back any data response)
//     renews it through the TokenSource and replays the request once with the same
//     body;
//   - answers its own failures as GraphQL-shaped JSON errors.
//
// WebSocket upgrades are guarded the same way and then handed to the relay in
// websocket.go.
//
// The package declares the TokenSource it needs; cmd adapts the token cache to it.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// TokenSource is what the proxy needs from the token cache; cmd adapts
// *tokencache.Cache to it. Implementations must be safe for concurrent use, and Token
// should answer from memory, without locking, while a usable token is held: it is
// called once per request.
type TokenSource interface {
	// Token returns the current JWT and the instant after which it must not be used,
	// waiting (bounded by ctx) while no usable token is held.
	Token(ctx context.Context) (jwt string, until time.Time, err error)
	// Renew is called with a JWT the upstream rejected. If the current token differs,
	// it returns that at once; else it joins or starts the one renewal in flight.
	// Returning jwt == rejected means "not renewed" (rejection-driven renewals are
	// throttled): the proxy then passes the rejection through.
	Renew(ctx context.Context, rejected string) (jwt string, until time.Time, err error)
	// Changed returns a channel closed the next time the token is replaced (WebSocket).
	Changed() <-chan struct{}
}

// Options configures New. Zero values get the defaults noted.
type Options struct {
	Upstream       *url.URL      // DXTRA_API_URL; http or https, may carry a base path
	Tokens         TokenSource   // required
	Role           string        // DXTRA_ROLE; required, always allowed
	AllowedRoles   []string      // DXTRA_ALLOWED_ROLES (Role is added)
	AllowedHosts   []string      // DXTRA_ALLOWED_HOSTS; nil → localhost, 127.0.0.1, ::1; ["*"] disables the check
	AllowedOrigins []string      // DXTRA_ALLOWED_ORIGINS; scheme://host[:port]
	MaxBodyBytes   int64         // DXTRA_MAX_BODY_BYTES; 0 → 1 MiB
	TokenWait      time.Duration // how long a request waits for a token; 0 → 10 s (SPEC 7)
	// Transport sends requests upstream; nil → NewTransport(TransportOptions{}).
	Transport http.RoundTripper
	Logger    *zap.Logger // nil → no logging
	// OnRetry is called once per replayed request with ReasonUnauthorized or
	// ReasonInvalidJWT.
	OnRetry func(reason string)
	// OnWebSocket is called with +1 / -1 per proxied WebSocket connection.
	OnWebSocket func(delta int)
	// OnRequestDone, if non-nil, is called once per request, when it ends, with the
	// final status (499 when the client went away), whether the request was replayed
	// with a renewed token, the role stamped ("" when refused before a role was chosen)
	// and the duration.
	OnRequestDone func(r *http.Request, status int, retried bool, role string, d time.Duration)
}

// DefaultAllowedHosts is the Host allow-list used when Options.AllowedHosts is nil.
var DefaultAllowedHosts = []string{"localhost", "127.0.0.1", "::1"}

// DefaultMaxBodyBytes is the request body limit used when Options.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 1 << 20

// Handler is the proxy. It is safe for concurrent use.
type Handler struct {
	rp        *httputil.ReverseProxy
	upstream  *url.URL
	tokens    TokenSource
	base      http.RoundTripper
	log       *zap.Logger
	roles     []string   // allowed roles; roles[0] is DXTRA_ROLE
	roleHdrs  [][]string // roleHdrs[i] = []string{roles[i]}, shared by every request
	anyHost   bool
	hosts     []string // normalised host names
	origins   []string // normalised origins
	maxBody   int64
	tokenWait time.Duration

	onRetry     func(string)
	onWebSocket func(int)
	onDone      func(*http.Request, int, bool, string, time.Duration)

	bearer atomic.Pointer[bearer]
	ws     wsState // owned by websocket.go
}

// New returns a Handler for opts, or an error naming what is wrong with them.
func New(opts Options) (*Handler, error) {
	if opts.Upstream == nil {
		return nil, errors.New("proxy: no upstream url")
	}
	up := *opts.Upstream
	if up.Scheme != "http" && up.Scheme != "https" || up.Host == "" || up.Opaque != "" {
		return nil, fmt.Errorf("proxy: upstream url %q: want http(s)://host[/base]", up.Redacted())
	}
	if up.User != nil {
		return nil, errors.New("proxy: upstream url must not carry user info")
	}
	up.Fragment, up.RawFragment = "", ""
	if opts.Tokens == nil {
		return nil, errors.New("proxy: no token source")
	}
	if err := checkRole(opts.Role); err != nil {
		return nil, fmt.Errorf("proxy: role: %w", err)
	}
	h := &Handler{
		upstream:    &up,
		tokens:      opts.Tokens,
		base:        opts.Transport,
		log:         opts.Logger,
		maxBody:     opts.MaxBodyBytes,
		tokenWait:   opts.TokenWait,
		onRetry:     opts.OnRetry,
		onWebSocket: opts.OnWebSocket,
		onDone:      opts.OnRequestDone,
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	h.log = h.log.Named("proxy")
	for _, r := range append([]string{opts.Role}, opts.AllowedRoles...) {
		if err := checkRole(r); err != nil {
			return nil, fmt.Errorf("proxy: allowed roles: %w", err)
		}
		if h.roleIndex(r) < 0 {
			h.roles = append(h.roles, r)
			h.roleHdrs = append(h.roleHdrs, []string{r})
		}
	}
	hosts := opts.AllowedHosts
	if hosts == nil {
		hosts = DefaultAllowedHosts
	}
	for _, a := range hosts {
		a = strings.TrimSpace(a)
		if a == "*" {
			h.anyHost = true
			continue
		}
		name, ok := hostName(a)
		if !ok {
			return nil, fmt.Errorf("proxy: allowed host %q is not a host name", a)
		}
		h.hosts = append(h.hosts, name)
	}
	for _, o := range opts.AllowedOrigins {
		n, err := NormalizeOrigin(strings.TrimSpace(o))
		if err != nil {
			return nil, fmt.Errorf("proxy: allowed origins: %w", err)
		}
		h.origins = append(h.origins, n)
	}
	switch {
	case h.maxBody == 0:
		h.maxBody = DefaultMaxBodyBytes
	case h.maxBody < 0:
		return nil, errors.New("proxy: negative MaxBodyBytes")
	}
	switch {
	case h.tokenWait == 0:
		h.tokenWait = tokenWaitDefault
	case h.tokenWait < 0:
		return nil, errors.New("proxy: negative TokenWait")
	}
	if h.base == nil {
		t, err := NewTransport(TransportOptions{})
		if err != nil {
			return nil, err
		}
		h.base = t
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:      h.rewrite,
		Transport:    transport{h},
		BufferPool:   copyBufferPool{},
		ErrorHandler: h.fail,
		ErrorLog:     errorLog(h.log),
	}
	if err := h.initWebSocket(); err != nil {
		return nil, err
	}
	return h, nil
}

// ServeHTTP guards, stamps and forwards r (SPEC behaviour 1–8).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := &exchange{Context: r.Context(), h: h, rw: w, start: time.Now()}
	if h.onDone != nil {
		defer h.finish(ex, r)
	}

	if err := h.guard(ex, r); err != nil {
		h.fail(ex, r, err)
		return
	}
	if ex.origin != "" {
		hdr := w.Header()
		hdr.Set("Access-Control-Allow-Origin", ex.origin)
		hdr.Add("Vary", "Origin")
		if _, ok := r.Header["Access-Control-Request-Method"]; ok && r.Method == http.MethodOptions {
			h.preflight(ex, r)
			return
		}
	}
	if err := h.chooseRole(ex, r); err != nil {
		h.fail(ex, r, err)
		return
	}
	if isWebSocketUpgrade(r.Header) {
		h.serveWebSocket(ex, r, ex.role)
		return
	}
	if _, ok := r.Header["Upgrade"]; ok {
		// Only WebSocket is switched to; anything else (h2c) is forwarded as plain HTTP/1.1.
		r.Header.Del("Upgrade")
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		b, err := readBody(r.Body, r.ContentLength, h.maxBody)
		switch {
		case errors.Is(err, errTooLarge):
			h.fail(ex, r, errBodyTooLarge)
			return
		case err != nil:
			if errors.Is(r.Context().Err(), context.Canceled) {
				h.fail(ex, r, err)
			} else {
				h.fail(ex, r, errBodyRead)
			}
			return
		case len(b) > 0:
			ex.body = b
		}
	}
	out := r.WithContext(ex)
	// The body is in ex; ReverseProxy must not wrap the drained original.
	out.Body, out.ContentLength, out.TransferEncoding = http.NoBody, 0, nil
	h.rp.ServeHTTP(ex, out)
}

// guard applies the checks of SPEC behaviour 4 that need no role: request form, path,
// Host, Origin. It records an allowed Origin in ex.
func (h *Handler) guard(ex *exchange, r *http.Request) error {
	if r.Method == http.MethodConnect {
		return errConnect
	}
	if r.URL.IsAbs() || r.URL.Host != "" || r.RequestURI != "" && r.RequestURI[0] != '/' {
		return errAbsoluteForm
	}
	if hasDotSegment(r.URL.Path) {
		return errDotSegment
	}
	if !h.anyHost && !h.hostAllowed(r.Host) {
		return errHostNotAllowed
	}
	if vals, ok := r.Header["Origin"]; ok {
		if len(vals) != 1 || !MatchOrigin(vals[0], h.origins) {
			return errOriginRefused
		}
		ex.origin = vals[0]
	}
	return nil
}

func (h *Handler) hostAllowed(host string) bool {
	name, ok := hostName(host)
	if !ok {
		return false
	}
	for _, a := range h.hosts {
		if asciiEqualFold(name, a) {
			return true
		}
	}
	return false
}

// chooseRole picks the role to stamp (SPEC behaviour 2 and 3).
func (h *Handler) chooseRole(ex *exchange, r *http.Request) error {
	vals := r.Header["X-Hasura-Role"]
	i := 0 // DXTRA_ROLE
	switch {
	case len(vals) > 1:
		return errTwoRoles
	case len(vals) == 1 && vals[0] != "":
		if i = h.roleIndex(vals[0]); i < 0 {
			return errRoleNotAllowed
		}
	}
	ex.role, ex.roleHdr = h.roles[i], h.roleHdrs[i]
	return nil
}

func (h *Handler) roleIndex(role string) int {
	for i, r := range h.roles {
		if r == role {
			return i
		}
	}
	return -1
}

// preflight answers a CORS preflight from an allowed origin.
func (h *Handler) preflight(ex *exchange, r *http.Request) {
	hdr := ex.Header()
	hdr.Set("Access-Control-Allow-Methods", "GET, POST")
	hdr.Set("Access-Control-Allow-Headers", corsAllowHeaders(r.Header["Access-Control-Request-Headers"]))
	hdr.Set("Access-Control-Max-Age", "600")
	hdr.Add("Vary", "Access-Control-Request-Method")
	hdr.Add("Vary", "Access-Control-Request-Headers")
	ex.WriteHeader(http.StatusNoContent)
}

// rewrite is the ReverseProxy's Rewrite: target URL, header policy, body.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	ex, ok := pr.In.Context().(*exchange)
	if !ok {
		ex = exchangeFrom(pr.In.Context())
	}
	pr.SetURL(h.upstream) // {API_URL}{path}?{query}; Host becomes the upstream's
	out := pr.Out
	stripHeaders(out.Header)
	delete(out.Header, "Expect") // the body is already here: no 100-continue round trip
	out.Header["X-Hasura-Role"] = ex.roleHdr
	if ex.body != nil {
		ex.first.Reset(ex.body)
		out.Body = io.NopCloser(&ex.first) // in-memory to net/http: see body.go
		out.ContentLength = int64(len(ex.body))
		out.GetBody = ex.getBody
	}
	// An upstream may close an idle keep-alive connection just as the next
	// request is written on it. net/http's Transport resends a request on a
	// fresh connection when a reused one died before any byte of the answer
	// came back, but only for requests it deems replayable: GET and friends, or
	// any request carrying an Idempotency-Key. A nil value marks the request so
	// without sending the header. GraphQL is POST, and the alternative is a
	// spurious 502 for a request the upstream never answered.
	if _, ok := out.Header["Idempotency-Key"]; !ok {
		out.Header["Idempotency-Key"] = nil
	}
}

// finish reports the request to OnRequestDone (deferred only when there is one).
func (h *Handler) finish(ex *exchange, r *http.Request) {
	p := recover()
	status := ex.status
	switch {
	case p != nil && !ex.wrote:
		status = http.StatusInternalServerError
	case !ex.wrote:
		status = http.StatusOK
	}
	h.onDone(r, status, ex.retried, ex.role, time.Since(ex.start))
	if p != nil {
		panic(p)
	}
}

// errorLog routes ReverseProxy's own log lines (upstream read errors while streaming)
// to the logger at warn level.
func errorLog(l *zap.Logger) *log.Logger {
	std, err := zap.NewStdLogAt(l, zap.WarnLevel)
	if err != nil { // only for an invalid level
		return zap.NewStdLog(l)
	}
	return std
}

// copyBufferPool lends ReverseProxy its 32 KiB copy buffers. Pooling arrays (not
// slices) keeps Put free of allocations.
type copyBufferPool struct{}

const copyBufferSize = 32 << 10

var copyBuffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

func (copyBufferPool) Get() []byte { return copyBuffers.Get().(*[copyBufferSize]byte)[:] }

func (copyBufferPool) Put(b []byte) {
	if cap(b) >= copyBufferSize {
		copyBuffers.Put((*[copyBufferSize]byte)(b[:copyBufferSize]))
	}
}
