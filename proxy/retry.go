package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Retry reasons passed to Options.OnRetry.
const (
	ReasonUnauthorized = "unauthorized" // ReasonUnauthorized: the upstream answered HTTP 401.
	ReasonInvalidJWT   = "invalid_jwt"  // ReasonInvalidJWT: the upstream answered a Hasura invalid-jwt error.
)

// sniffCap is how much of a response that starts like a GraphQL error envelope is read
// to decide whether it is a rejected token. Hasura's auth errors are a few hundred
// bytes.
const sniffCap = 4 << 10

// errorsPrefix is how every Hasura /v1/graphql error envelope starts.
const errorsPrefix = `{"errors"`

var sniffPool = sync.Pool{New: func() any { return new([sniffCap]byte) }}

// errEmptyToken stands for a token source that answered no error and no token.
var errEmptyToken = errors.New("token source returned an empty token")

// bearer caches the Authorization value of one token so that stamping a request
// allocates nothing while the token stays the same.
type bearer struct {
	jwt string
	hdr []string // []string{"Bearer " + jwt}; shared, never modified
}

// transport is the RoundTripper httputil.ReverseProxy uses: it stamps the token, sends
// through the base transport, and on a rejected token renews once and replays.
type transport struct {
	h *Handler
}

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	h := t.h
	ex := exchangeFrom(req.Context())
	if ex == nil {
		closeBody(req)
		return nil, errors.New("proxy: request without exchange state")
	}
	ex.wait.init(req.Context(), ex.start.Add(h.tokenWait))
	jwt, _, err := h.tokens.Token(&ex.wait)
	ex.wait.release()
	if err == nil && jwt == "" {
		err = errEmptyToken
	}
	if err != nil {
		closeBody(req)
		return nil, &tokenError{err: err}
	}
	h.stamp(req.Header, jwt)
	resp, err := h.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if reason := ex.rejected(req, resp); reason != "" {
		resp, err = ex.renewAndReplay(req, resp, jwt, reason)
		if err != nil {
			return nil, err
		}
	}
	if ex.origin != "" {
		// The proxy answers CORS itself (the header is on the ResponseWriter already).
		delete(resp.Header, "Access-Control-Allow-Origin")
		delete(resp.Header, "Access-Control-Allow-Credentials")
	}
	return resp, nil
}

// renewAndReplay handles a response that rejected jwt: it renews the token and sends
// the request once more with the new one and the same body. When the token source
// declines to renew (it returns jwt again: rejection-driven renewals are throttled),
// the rejection itself is passed on.
func (ex *exchange) renewAndReplay(req *http.Request, resp *http.Response, jwt, reason string) (*http.Response, error) {
	h := ex.h
	ctx, cancel := context.WithTimeout(req.Context(), h.tokenWait)
	fresh, _, err := h.tokens.Renew(ctx, jwt)
	cancel()
	if err == nil && fresh == "" {
		err = errEmptyToken
	}
	if err != nil {
		discard(resp)
		return nil, &tokenError{renewal: true, err: err}
	}
	if fresh == jwt || (req.Body != nil && req.GetBody == nil) {
		return resp, nil
	}
	discard(resp)
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		if again.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	h.stamp(again.Header, fresh)
	ex.retried = true
	if h.onRetry != nil {
		h.onRetry(reason)
	}
	if ce := h.log.Check(zap.DebugLevel, "token rejected, retrying once"); ce != nil {
		ce.Write(zap.String("reason", reason))
	}
	return h.base.RoundTrip(again)
}

// stamp sets the one Authorization header for jwt.
func (h *Handler) stamp(hdr http.Header, jwt string) {
	b := h.bearer.Load()
	if b == nil || b.jwt != jwt {
		b = &bearer{jwt: jwt, hdr: []string{"Bearer " + jwt}}
		h.bearer.Store(b)
	}
	hdr["Authorization"] = b.hdr
}

// rejected reports why resp rejects the token ("" when it does not). A 401 is a
// rejection. A 200 or 400 without Content-Encoding is sniffed: its first bytes are
// compared with `{"errors"` as they arrive, and only a body that matches is read on, up
// to sniffCap, and parsed. resp.Body is replaced so that whatever was read still
// reaches the client.
func (ex *exchange) rejected(req *http.Request, resp *http.Response) string {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return ReasonUnauthorized
	case http.StatusOK, http.StatusBadRequest:
	default:
		return ""
	}
	if req.Method == http.MethodHead || resp.ContentLength == 0 || resp.ContentLength > sniffCap {
		return ""
	}
	if _, ok := resp.Header["Content-Encoding"]; ok {
		return ""
	}
	s := &ex.sniff
	s.reset(resp.Body)
	resp.Body = s
	if s.sniff() {
		return ReasonInvalidJWT
	}
	return ""
}

// sniffBody is a response body whose first bytes were read to sniff it: they are
// returned first, then the rest of the original body.
type sniffBody struct {
	body io.ReadCloser
	buf  *[sniffCap]byte
	off  int
	n    int
	err  error // the error that ended sniffing (io.EOF included), returned after buf
}

func (s *sniffBody) reset(body io.ReadCloser) {
	*s = sniffBody{body: body, buf: sniffPool.Get().(*[sniffCap]byte)}
}

// sniff reads as little of the body as deciding needs and reports whether it is a
// Hasura invalid-jwt rejection.
func (s *sniffBody) sniff() bool {
	for {
		m, err := s.body.Read(s.buf[s.n:])
		s.n += m
		if err != nil {
			s.err = err
			return err == io.EOF && isInvalidJWT(s.buf[:s.n])
		}
		if v := prefixVerdict(s.buf[:s.n]); v == verdictDeparts {
			return false
		}
		if s.n == len(s.buf) {
			return false // over the cap: not an auth error
		}
	}
}

const (
	verdictUndecided = iota // every byte so far matches, but there are too few
	verdictDeparts          // a byte departs from {"errors"
	verdictMatches          // the body starts with {"errors"
)

// prefixVerdict compares the first bytes of a body with `{"errors"`.
func prefixVerdict(b []byte) int {
	n := min(len(b), len(errorsPrefix))
	if string(b[:n]) != errorsPrefix[:n] {
		return verdictDeparts
	}
	if n == len(errorsPrefix) {
		return verdictMatches
	}
	return verdictUndecided
}

// isInvalidJWT reports whether body is a GraphQL error envelope holding exactly one
// error whose extensions say path "$" and code "invalid-jwt": Hasura's answer to a JWT
// it cannot verify (expired, bad signature, garbage).
func isInvalidJWT(body []byte) bool {
	if !bytes.HasPrefix(body, []byte(errorsPrefix)) {
		return false
	}
	var env struct {
		Errors []struct {
			Extensions struct {
				Path string `json:"path"`
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &env) != nil || len(env.Errors) != 1 {
		return false
	}
	e := env.Errors[0].Extensions
	return e.Path == "$" && e.Code == "invalid-jwt"
}

func (s *sniffBody) Read(p []byte) (int, error) {
	if s.buf != nil {
		if s.off < s.n {
			n := copy(p, s.buf[s.off:s.n])
			s.off += n
			return n, nil
		}
		s.putBuf()
	}
	if s.err != nil {
		return 0, s.err
	}
	return s.body.Read(p)
}

func (s *sniffBody) Close() error {
	s.putBuf()
	return s.body.Close()
}

func (s *sniffBody) putBuf() {
	if s.buf != nil {
		sniffPool.Put(s.buf)
		s.buf = nil
	}
}

// discard drains a little of a response that will not be used, so that its connection
// can be reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, sniffCap)
	_ = resp.Body.Close()
}

// closeBody closes an outgoing request's body, as a RoundTripper must on every path.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// tokenWaitDefault is SPEC behaviour 7's wait for a token.
const tokenWaitDefault = 10 * time.Second
