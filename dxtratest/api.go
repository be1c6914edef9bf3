package dxtratest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Request is one HTTP request the API received, as recorded by Server.Requests. Each
// Request returned is the caller's own copy, safe to read from any goroutine.
type Request struct {
	Method     string
	Path       string
	RawQuery   string
	Header     http.Header // a clone of the request's headers
	Body       []byte      // the request body as received
	TokenValid bool        // exactly one "Bearer <jwt>" Authorization whose JWT verified, unexpired and unrevoked, on arrival
	Role       string      // the role the request ran as; "" when authentication failed
}

// DataController is one row of the sample data served for dataControllers queries. It is
// a plain value, safe to share.
type DataController struct {
	ID    int    `json:"id"`
	Title string `json:"title"`
}

// SampleDataControllers is the data the API answers a dataControllers query with.
// Read-only (the answer is encoded once at start-up), so safe for concurrent reads.
var SampleDataControllers = []DataController{
	{ID: 1, Title: "Acme Analytics Ltd"},
	{ID: 2, Title: "Globex Data Services"},
	{ID: 3, Title: "Initech Processing GmbH"},
}

const (
	jsonContentType = "application/json; charset=utf-8"
	maxAPIBody      = 64 << 20 // request bodies beyond this are cut (recorded truncated)
	maxLargeBytes   = 1 << 30
	maxStreamChunks = 100000
)

var dataControllersBody = func() []byte {
	b, err := json.Marshal(map[string]any{"data": map[string]any{"dataControllers": SampleDataControllers}})
	if err != nil {
		panic(err)
	}
	return b
}()

// LargeBody returns the n bytes /large?bytes=n answers with: byte i is i mod 251, a
// period prime to every power of two, so a lost, duplicated or reordered block shows.
// It is safe for concurrent use.
func LargeBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// largeBlock is 251*256 bytes of the LargeBody pattern; whole blocks keep the phase.
var largeBlock = LargeBody(251 * 256)

// pathKind says how Hasura answers on a path.
type pathKind int

const (
	kindNotFound pathKind = iota
	kindGraphQL           // /v1/graphql, /v1beta1/relay: errors are HTTP 200
	kindAlpha             // /v1alpha1/graphql: GraphQL envelope with the real status
	kindQuery             // /v1/query, /v2/query, /v1/metadata: {"path","error","code"}
	kindSlow
	kindStream
	kindLarge
	kindStatus
	kindHealthz
)

func classify(path string) pathKind {
	switch path {
	case "/v1/graphql", "/v1beta1/relay":
		return kindGraphQL
	case "/v1alpha1/graphql":
		return kindAlpha
	case "/v1/query", "/v2/query", "/v1/metadata":
		return kindQuery
	case "/slow":
		return kindSlow
	case "/stream":
		return kindStream
	case "/large":
		return kindLarge
	case "/status":
		return kindStatus
	case "/healthz":
		return kindHealthz
	}
	return kindNotFound
}

// apiAuth is the outcome of Hasura's JWT-mode authentication of one request.
type apiAuth struct {
	tokenValid bool
	info       *tokenInfo
	role       string // effective role when ok
	ok         bool
	code       string // Hasura error code when !ok
	message    string
	status     int  // qeStatus: 400, or 401 for the admin secret
	jwtReject  bool // a rejection a gateway would turn into 401 (invalid-jwt, invalid-headers)
	authHeader string
}

// authenticate checks headers like Hasura in JWT mode (admin secret first, then the
// Authorization header, then the role). The JWT is checked even when an admin secret
// decides the answer, so that TokenValid is recorded.
func (s *Server) authenticate(h http.Header, now time.Time) apiAuth {
	var a apiAuth
	authz := h.Values("Authorization")
	var jerr *jwtError
	switch {
	case len(authz) == 0:
		a.code, a.message = "invalid-headers", "Missing 'Authorization' or 'Cookie' header in JWT authentication mode"
	case len(authz) > 1:
		a.code, a.message = "invalid-headers", "Could not verify JWT: Multiple JWTs found"
	default:
		a.authHeader = authz[0]
		f := strings.Fields(authz[0])
		if len(f) != 2 || f[0] != "Bearer" {
			a.code, a.message = "invalid-headers", "Malformed Authorization header"
			break
		}
		a.info, jerr = s.verify(f[1], now)
		if jerr != nil {
			a.code, a.message = jerr.code, jerr.message
			break
		}
		a.tokenValid = true
	}
	a.status = http.StatusBadRequest
	a.jwtReject = !a.tokenValid
	if len(h.Values("X-Hasura-Admin-Secret")) > 0 || len(h.Values("X-Hasura-Access-Key")) > 0 {
		a.code, a.message = "access-denied", "invalid x-hasura-admin-secret/x-hasura-access-key"
		a.status, a.jwtReject = http.StatusUnauthorized, false
		return a
	}
	if !a.tokenValid {
		return a
	}
	role := a.info.defaultRole
	if v := h.Values("X-Hasura-Role"); len(v) > 0 {
		role = v[0]
	}
	if !contains(a.info.roles, role) {
		a.code, a.message = "access-denied", "Your requested role is not in allowed roles"
		return a
	}
	a.ok, a.role = true, role
	return a
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	kind := classify(r.URL.Path)
	if isWebSocketUpgrade(r) {
		s.serveWSUpgrade(w, r, kind)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody))
	if err != nil {
		return // the client went away
	}
	var a apiAuth
	if kind != kindNotFound && kind != kindHealthz {
		a = s.authenticate(r.Header, s.now())
	}
	s.record(r, body, a)
	if status, retryAfter, failed := s.countAndFail(GraphQL); failed {
		writeAPIFailure(w, status, retryAfter)
		return
	}
	switch kind {
	case kindNotFound:
		writeQErr(w, http.StatusNotFound, "not-found", "resource does not exist")
		return
	case kindHealthz:
		writeRaw(w, http.StatusOK, "text/plain; charset=utf-8", []byte("OK"))
		return
	}
	if !a.ok {
		s.writeAuthFailure(w, kind, a)
		return
	}
	switch kind {
	case kindGraphQL, kindAlpha:
		s.serveGraphQL(w, r, body)
	case kindQuery:
		writeQErr(w, http.StatusBadRequest, "not-supported", "the fake serves no "+r.URL.Path)
	case kindSlow:
		serveSlow(w, r)
	case kindStream:
		serveStream(w, r)
	case kindLarge:
		serveLarge(w, r)
	case kindStatus:
		serveStatus(w, r)
	}
}

// record stores one request, keeping at most recordLimit (oldest dropped).
func (s *Server) record(r *http.Request, body []byte, a apiAuth) {
	if s.recordLimit < 0 {
		return
	}
	rec := Request{
		Method:     r.Method,
		Path:       r.URL.Path,
		RawQuery:   r.URL.RawQuery,
		Header:     r.Header.Clone(),
		Body:       body,
		TokenValid: a.tokenValid,
		Role:       a.role,
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if len(s.reqs) < s.recordLimit {
		s.reqs = append(s.reqs, rec)
		return
	}
	s.reqs[s.reqStart] = rec
	s.reqStart = (s.reqStart + 1) % len(s.reqs)
}

// Requests returns a copy of the recorded API requests, oldest first (at most
// Options.RecordLimit of the latest).
func (s *Server) Requests() []Request {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	out := make([]Request, 0, len(s.reqs))
	out = append(out, s.reqs[s.reqStart:]...)
	return append(out, s.reqs[:s.reqStart]...)
}

// ResetRequests forgets the recorded API requests and WebSocket sessions.
func (s *Server) ResetRequests() {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.reqs, s.reqStart = nil, 0
	s.wsSessions = nil
}

// writeAuthFailure answers a request whose authentication failed, shaped by path kind.
func (s *Server) writeAuthFailure(w http.ResponseWriter, kind pathKind, a apiAuth) {
	status := a.status
	if kind == kindGraphQL {
		status = http.StatusOK
	}
	if a.jwtReject && s.gateway.Load() {
		status = http.StatusUnauthorized
	}
	if kind == kindGraphQL || kind == kindAlpha {
		writeGQErr(w, status, "$", a.code, a.message)
		return
	}
	writeQErr(w, status, a.code, a.message)
}

// writeGQErr writes Hasura's GraphQL error envelope with one error.
func writeGQErr(w http.ResponseWriter, status int, path, code, message string) {
	var b bytes.Buffer
	b.WriteString(`{"errors":[{"extensions":{"path":`)
	writeJSONString(&b, path)
	b.WriteString(`,"code":`)
	writeJSONString(&b, code)
	b.WriteString(`},"message":`)
	writeJSONString(&b, message)
	b.WriteString(`}]}`)
	writeRaw(w, status, jsonContentType, b.Bytes())
}

// writeQErr writes Hasura's non-GraphQL error {"path":"$","error":..,"code":..}.
func writeQErr(w http.ResponseWriter, status int, code, message string) {
	var b bytes.Buffer
	b.WriteString(`{"path":"$","error":`)
	writeJSONString(&b, message)
	b.WriteString(`,"code":`)
	writeJSONString(&b, code)
	b.WriteString(`}`)
	writeRaw(w, status, jsonContentType, b.Bytes())
}

// writeAPIFailure writes an injected failure on the API.
func writeAPIFailure(w http.ResponseWriter, status int, retryAfter string) {
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(status)
		return
	}
	writeQErr(w, status, "unexpected", "injected failure: "+strconv.Itoa(status)+" "+http.StatusText(status))
}

// gqlRequest is the body of a GraphQL POST.
type gqlRequest struct {
	Query         *string         `json:"query"`
	Variables     json.RawMessage `json:"variables"`
	OperationName *string         `json:"operationName"`
}

func (s *Server) serveGraphQL(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Method == http.MethodGet {
		writeGQErr(w, http.StatusOK, "$", "bad-request", "PersistedQueryNotSupported")
		return
	}
	if r.Method != http.MethodPost {
		writeQErr(w, http.StatusNotFound, "not-found", "resource does not exist")
		return
	}
	var req gqlRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeGQErr(w, http.StatusOK, "$", "invalid-json", "Error in $: "+err.Error())
		return
	}
	if req.Query == nil {
		writeGQErr(w, http.StatusOK, "$", "parse-failed", `Error in $: key "query" not found`)
		return
	}
	code, resp := answerQuery(*req.Query)
	if code != "" {
		writeGQErr(w, http.StatusOK, "$.selectionSet", code, resp)
		return
	}
	writeRaw(w, http.StatusOK, jsonContentType, []byte(resp))
}

// answerQuery answers a GraphQL document: dataControllers from the sample data, a bare
// __typename, else a validation-failed error naming the first field. It returns an error
// code and message, or "" and the response body.
func answerQuery(q string) (code, result string) {
	if strings.Contains(q, "dataControllers") {
		return "", string(dataControllersBody)
	}
	field, ok := firstField(q)
	switch {
	case !ok:
		return "validation-failed", "not a valid graphql query"
	case field == "__typename":
		return "", `{"data":{"__typename":"query_root"}}`
	}
	return "validation-failed", "field '" + field + "' not found in type: 'query_root'"
}

// firstField returns the name of the first field of the first selection set in a
// GraphQL document: the identifier after the first '{'.
func firstField(q string) (string, bool) {
	i := strings.IndexByte(q, '{')
	if i < 0 {
		return "", false
	}
	q = strings.TrimLeft(q[i+1:], " \t\r\n,")
	n := 0
	for n < len(q) {
		c := q[n]
		if c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || n > 0 && '0' <= c && c <= '9' {
			n++
			continue
		}
		break
	}
	if n == 0 {
		return "", false
	}
	return q[:n], true
}

// badParam answers a malformed test-path parameter.
func badParam(w http.ResponseWriter, name, value string) {
	writeQErr(w, http.StatusBadRequest, "bad-request", "invalid "+name+" parameter: "+strconv.Quote(value))
}

func durationParam(w http.ResponseWriter, r *http.Request, name string, def time.Duration) (time.Duration, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		badParam(w, name, v)
		return 0, false
	}
	return d, true
}

func intParam(w http.ResponseWriter, r *http.Request, name string, def, lo, hi int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		badParam(w, name, v)
		return 0, false
	}
	return n, true
}

// sleepCtx waits d or until the request ends; it reports whether d elapsed.
func sleepCtx(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// serveSlow: /slow?delay=2s (default 1s) waits, then answers {"data":{"slow":"<delay>"}}.
func serveSlow(w http.ResponseWriter, r *http.Request) {
	d, ok := durationParam(w, r, "delay", time.Second)
	if !ok || !sleepCtx(r, d) {
		return
	}
	writeRaw(w, http.StatusOK, jsonContentType, []byte(`{"data":{"slow":"`+d.String()+`"}}`))
}

// serveStream: /stream?chunks=5&interval=50ms writes "chunk <i>\n" lines, flushing each,
// with interval between them.
func serveStream(w http.ResponseWriter, r *http.Request) {
	n, ok := intParam(w, r, "chunks", 5, 0, maxStreamChunks)
	if !ok {
		return
	}
	interval, ok := durationParam(w, r, "interval", 50*time.Millisecond)
	if !ok {
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	for i := range n {
		if i > 0 && !sleepCtx(r, interval) {
			return
		}
		if _, err := io.WriteString(w, "chunk "+strconv.Itoa(i)+"\n"); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// serveLarge: /large?bytes=N (default 1 MiB) writes LargeBody(N) with a Content-Length.
func serveLarge(w http.ResponseWriter, r *http.Request) {
	n, ok := intParam(w, r, "bytes", 1<<20, 0, maxLargeBytes)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)
	for n > 0 {
		k := min(n, len(largeBlock))
		if _, err := w.Write(largeBlock[:k]); err != nil {
			return
		}
		n -= k
	}
}

// serveStatus: /status?code=N answers status N (200–599) with "status N\n".
func serveStatus(w http.ResponseWriter, r *http.Request) {
	code, ok := intParam(w, r, "code", http.StatusOK, 200, 599)
	if !ok {
		return
	}
	if code == http.StatusNoContent || code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	writeRaw(w, code, "text/plain; charset=utf-8", []byte("status "+strconv.Itoa(code)+"\n"))
}
