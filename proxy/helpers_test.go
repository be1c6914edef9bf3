package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// failAfter bounds how long a test waits for something that should happen at once; it
// only turns a hang into a failure, it never synchronises.
const failAfter = 10 * time.Second

// authority is the fake issuer shared by fakeTokens and fakeHasura: it mints tokens and
// knows which are valid.
type authority struct {
	mu        sync.Mutex
	n         int
	valid     map[string]bool
	rejectAll bool
}

func newAuthority() *authority { return &authority{valid: map[string]bool{}} }

func (a *authority) mint() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	tok := "tok-" + strconv.Itoa(a.n)
	a.valid[tok] = true
	return tok
}

func (a *authority) revoke(tok string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.valid, tok)
}

func (a *authority) isValid(tok string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.valid[tok] && !a.rejectAll
}

// fakeTokens is a TokenSource over an authority. Renew behaves like tokencache's: it
// returns the current token when the rejected one was already replaced, and otherwise
// performs one exchange while concurrent callers wait (coalescing), unless throttled.
type fakeTokens struct {
	auth        *authority
	mu          sync.Mutex
	cur         string
	throttle    bool  // Renew returns the current token unchanged
	renewErr    error // Renew fails
	unavailable bool  // Token waits for ctx and fails
	waiting     chan struct{}

	renews    atomic.Int32 // Renew calls
	exchanges atomic.Int32 // renewals performed
}

func newFakeTokens(a *authority) *fakeTokens {
	return &fakeTokens{auth: a, cur: a.mint(), waiting: make(chan struct{}, 100)}
}

func (f *fakeTokens) current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

func (f *fakeTokens) Token(ctx context.Context) (string, time.Time, error) {
	f.mu.Lock()
	cur, unavailable := f.cur, f.unavailable
	f.mu.Unlock()
	if unavailable {
		f.waiting <- struct{}{}
		<-ctx.Done()
		return "", time.Time{}, errors.Join(errors.New("no token"), ctx.Err())
	}
	return cur, time.Now().Add(time.Hour), nil
}

func (f *fakeTokens) Renew(ctx context.Context, rejected string) (string, time.Time, error) {
	f.renews.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.renewErr != nil {
		return "", time.Time{}, f.renewErr
	}
	if rejected != f.cur || f.throttle {
		return f.cur, time.Now().Add(time.Hour), nil
	}
	f.exchanges.Add(1)
	f.cur = f.auth.mint()
	return f.cur, time.Now().Add(time.Hour), nil
}

func (f *fakeTokens) Changed() <-chan struct{} { return make(chan struct{}) }

// recorded is one request as the fake upstream saw it.
type recorded struct {
	Method, Path, RawPath, RawQuery, Host string
	Header                                http.Header
	Body                                  []byte
	ContentLength                         int64
	TransferEncoding                      []string
}

// upstream is a loopback httptest server recording every request before handing it to
// its handler.
type upstream struct {
	srv  *httptest.Server
	URL  *url.URL
	hits atomic.Int32
	mu   sync.Mutex
	reqs []recorded
}

func newUpstream(t *testing.T, handler http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, recorded{r.Method, r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.Host,
			r.Header.Clone(), body, r.ContentLength, r.TransferEncoding})
		u.mu.Unlock()
		u.hits.Add(1)
		handler(w, r)
	}))
	t.Cleanup(u.srv.Close)
	u.URL, _ = url.Parse(u.srv.URL)
	return u
}

func (u *upstream) requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
}

// Bodies the fake Hasura answers with (PROTOCOL §5).
const (
	bodyInvalidJWT   = `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"},"message":"Could not verify JWT: JWTExpired"}]}`
	bodyAccessDenied = `{"errors":[{"extensions":{"path":"$","code":"access-denied"},"message":"Your requested role is not in allowed roles"}]}`
	bodyData         = `{"data":{"dataControllers":[{"id":"dc-1","title":"Acme"}]}}`
)

// hasuraHandler answers like Hasura on /v1/graphql: invalid-jwt (or 401 in gateway
// mode) for a token the authority does not accept, access-denied for a role outside
// roles, data otherwise.
func hasuraHandler(a *authority, gateway bool, roles ...string) http.HandlerFunc {
	if roles == nil {
		roles = []string{"user", "me"}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !a.isValid(tok) {
			if gateway {
				w.Header().Set("Www-Authenticate", `Bearer error="invalid_token"`)
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"message":"Unauthorized"}`)
				return
			}
			io.WriteString(w, bodyInvalidJWT)
			return
		}
		role := r.Header.Get("X-Hasura-Role")
		for _, allowed := range roles {
			if role == allowed {
				io.WriteString(w, bodyData)
				return
			}
		}
		io.WriteString(w, bodyAccessDenied)
	}
}

// doneRecord is one OnRequestDone call.
type doneRecord struct {
	status  int
	retried bool
	role    string
}

// testProxy is a Handler served by a loopback httptest server.
type testProxy struct {
	h      *Handler
	srv    *httptest.Server
	addr   string // host:port of the proxy listener
	URL    string
	client *http.Client
	done   chan doneRecord
	retry  chan string
}

// newTestProxy starts the handler for opts in front of up. Unset Options get test
// defaults: a fresh tuned transport (closed at cleanup), role "user".
func newTestProxy(t *testing.T, up *url.URL, tokens TokenSource, opts Options) *testProxy {
	t.Helper()
	tp := &testProxy{done: make(chan doneRecord, 100), retry: make(chan string, 100)}
	opts.Upstream = up
	opts.Tokens = tokens
	if opts.Role == "" {
		opts.Role = "user"
	}
	if opts.Transport == nil {
		tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tr.CloseIdleConnections)
		opts.Transport = tr
	}
	if opts.OnRequestDone == nil {
		opts.OnRequestDone = func(_ *http.Request, status int, retried bool, role string, _ time.Duration) {
			tp.done <- doneRecord{status, retried, role}
		}
	}
	if opts.OnRetry == nil {
		opts.OnRetry = func(reason string) { tp.retry <- reason }
	}
	h, err := New(opts)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	tp.h = h
	tp.srv = httptest.NewServer(h)
	t.Cleanup(tp.srv.Close)
	tp.URL = tp.srv.URL
	tp.addr = tp.srv.Listener.Addr().String()
	ct := &http.Transport{MaxIdleConnsPerHost: 100, DisableCompression: true}
	t.Cleanup(ct.CloseIdleConnections)
	tp.client = &http.Client{Transport: ct}
	return tp
}

// nextDone returns the next OnRequestDone record.
func (tp *testProxy) nextDone(t *testing.T) doneRecord {
	t.Helper()
	select {
	case d := <-tp.done:
		return d
	case <-time.After(failAfter):
		t.Fatal("OnRequestDone was not called")
		return doneRecord{}
	}
}

// retries drains and returns the OnRetry reasons seen so far.
func (tp *testProxy) retries() []string {
	var out []string
	for {
		select {
		case r := <-tp.retry:
			out = append(out, r)
		default:
			return out
		}
	}
}

// post sends body to path with optional headers and returns status, headers, body.
func (tp *testProxy) post(t *testing.T, path, body string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	return tp.do(t, http.MethodPost, path, body, hdr)
}

func (tp *testProxy) do(t *testing.T, method, path, body string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, tp.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := tp.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

// raw writes a hand-written HTTP/1.1 request to addr and reads the response.
func raw(t *testing.T, addr, request string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(failAfter))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", request, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}
