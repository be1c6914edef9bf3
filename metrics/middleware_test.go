package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// failAfter bounds a wait on a real socket: it is a failure deadline, not a way to
// synchronise.
const failAfter = 10 * time.Second

// newServer serves h behind m.Middleware on loopback. served receives one value each
// time the middleware has returned, i.e. once a request is fully accounted for.
func newServer(t *testing.T, m *Metrics, h http.Handler) (srv *httptest.Server, served <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, 1000)
	mw := m.Middleware(h)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { ch <- struct{}{} }()
		mw.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func waitServed(t *testing.T, served <-chan struct{}, n int) {
	t.Helper()
	timeout := time.After(failAfter)
	for i := range n {
		select {
		case <-served:
		case <-timeout:
			t.Fatalf("only %d of %d requests finished within %v", i, n, failAfter)
		}
	}
}

// statusHandler answers the status in ?code= (default 200) with a short body.
var statusHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	code := http.StatusOK
	if c := r.URL.Query().Get("code"); c != "" {
		if _, err := fmt.Sscan(c, &code); err != nil {
			http.Error(w, "bad code", http.StatusBadRequest)
			return
		}
	}
	w.WriteHeader(code)
	io.WriteString(w, "ok")
})

func do(t *testing.T, c *http.Client, method, url string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func TestMiddlewareCountsRequests(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	srv, served := newServer(t, m, statusHandler)
	c := srv.Client()
	for range 3 {
		do(t, c, http.MethodGet, srv.URL+"/v1/graphql")
	}
	do(t, c, http.MethodPost, srv.URL+"/v1/graphql?code=503")
	waitServed(t, served, 4)

	s := scrape(t, m)
	tests := []struct {
		key  string
		want float64
	}{
		{`dxtra_proxy_requests_total{code="200",method="GET"}`, 3},
		{`dxtra_proxy_requests_total{code="503",method="POST"}`, 1},
		{`dxtra_proxy_request_duration_seconds_count{code="200"}`, 3},
		{`dxtra_proxy_request_duration_seconds_count{code="503"}`, 1},
		{`dxtra_proxy_request_duration_seconds_bucket{code="200",le="60"}`, 3},
		{`dxtra_proxy_inflight_requests`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := s.value(t, tt.key); got != tt.want {
				t.Errorf("%s = %v; want %v", tt.key, got, tt.want)
			}
		})
	}
	if got := s.series("dxtra_proxy_requests_total"); len(got) != 2 {
		t.Errorf("request series = %v; want 2", got)
	}
	if got := s.value(t, `dxtra_proxy_request_duration_seconds_sum{code="200"}`); got <= 0 {
		t.Errorf("duration sum for 200 = %v; want > 0", got)
	}
	// Every configured bucket is exposed, plus +Inf.
	n := 0
	for k := range s.samples {
		if strings.HasPrefix(k, `dxtra_proxy_request_duration_seconds_bucket{code="503",`) {
			n++
		}
	}
	if want := len(DurationBuckets) + 1; n != want { // + the +Inf bucket
		t.Errorf("buckets for code 503 = %d; want %d", n, want)
	}
}

// serveDirect runs h behind the middleware on a recorder, recovering a panic.
func serveDirect(m *Metrics, h http.Handler, method string) (panicked any) {
	defer func() { panicked = recover() }()
	m.Middleware(h).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, "/v1/graphql", nil))
	return nil
}

func TestMiddlewareStatus(t *testing.T) {
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		wantCode  string
		wantPanic bool
	}{
		{"explicit status", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) }, "201", false},
		{"body only", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) }, "200", false},
		{"WriteString only", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }, "200", false},
		{"nothing written", func(w http.ResponseWriter, r *http.Request) {}, "200", false},
		{"flush only", func(w http.ResponseWriter, r *http.Request) { w.(http.Flusher).Flush() }, "200", false},
		{"first status wins", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			w.WriteHeader(http.StatusInternalServerError)
		}, "202", false},
		{"body then status", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("hi"))
			w.WriteHeader(http.StatusInternalServerError)
		}, "200", false},
		{"informational then final", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusContinue)
			w.WriteHeader(http.StatusNoContent)
		}, "204", false},
		{"switching protocols", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusSwitchingProtocols) }, "101", false},
		{"highest cached", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) }, "599", false},
		{"beyond 599", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(600) }, "other", false},
		{"way beyond", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(999) }, "other", false},
		{"panic before status", func(w http.ResponseWriter, r *http.Request) { panic("boom") }, "500", true},
		{"abort after status", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("partial"))
			panic(http.ErrAbortHandler) // what httputil.ReverseProxy does when the upstream body breaks
		}, "200", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(prometheus.NewRegistry(), BuildInfo{})
			p := serveDirect(m, tt.handler, http.MethodGet)
			if (p != nil) != tt.wantPanic {
				t.Fatalf("panic = %v; want panic %v (the middleware must not swallow panics)", p, tt.wantPanic)
			}
			s := scrape(t, m)
			key := fmt.Sprintf(`dxtra_proxy_requests_total{code=%q,method="GET"}`, tt.wantCode)
			if got := s.value(t, key); got != 1 {
				t.Errorf("%s = %v; want 1", key, got)
			}
			if got := s.series("dxtra_proxy_requests_total"); len(got) != 1 {
				t.Errorf("request series = %v; want one", got)
			}
			key = fmt.Sprintf(`dxtra_proxy_request_duration_seconds_count{code=%q}`, tt.wantCode)
			if got := s.value(t, key); got != 1 {
				t.Errorf("%s = %v; want 1", key, got)
			}
			if got := s.value(t, "dxtra_proxy_inflight_requests"); got != 0 {
				t.Errorf("inflight after the request = %v; want 0", got)
			}
		})
	}
}

func TestMiddlewareMethodLabels(t *testing.T) {
	tests := []struct {
		method string
		want   string
	}{
		{"GET", "GET"}, {"POST", "POST"}, {"PUT", "PUT"}, {"PATCH", "PATCH"},
		{"DELETE", "DELETE"}, {"HEAD", "HEAD"}, {"OPTIONS", "OPTIONS"},
		{"CONNECT", "CONNECT"}, {"TRACE", "TRACE"},
		{"get", "other"}, {"Post", "other"}, {"FOO", "other"}, {"PROPFIND", "other"},
		{"GETX", "other"}, {"M-SEARCH", "other"},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			m := New(prometheus.NewRegistry(), BuildInfo{})
			if p := serveDirect(m, statusHandler, tt.method); p != nil {
				t.Fatalf("panic: %v", p)
			}
			key := fmt.Sprintf(`dxtra_proxy_requests_total{code="200",method=%q}`, tt.want)
			if got := scrape(t, m).value(t, key); got != 1 {
				t.Errorf("%s after one %s request = %v; want 1", key, tt.method, got)
			}
		})
	}
}

func TestMiddlewareOddMethodsBounded(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	srv, served := newServer(t, m, statusHandler)
	rng := rand.New(rand.NewPCG(5, 50))
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
	seen := map[string]bool{}
	for len(seen) < 50 {
		b := make([]byte, 3+rng.IntN(12))
		for i := range b {
			b[i] = letters[rng.IntN(len(letters))]
		}
		if methodIndex(string(b)) != methodOther {
			continue
		}
		seen[string(b)] = true
	}
	for method := range seen {
		do(t, srv.Client(), method, srv.URL+"/")
	}
	waitServed(t, served, len(seen))

	s := scrape(t, m)
	if got := s.series("dxtra_proxy_requests_total"); len(got) != 1 {
		t.Errorf("request series after 50 odd methods = %v; want one", got)
	}
	if got := s.value(t, `dxtra_proxy_requests_total{code="200",method="other"}`); got != 50 {
		t.Errorf(`requests_total{method="other"} = %v; want 50`, got)
	}
	for method := range seen {
		if strings.Contains(s.body, `"`+method+`"`) {
			t.Errorf("/metrics mentions the method %q", method)
		}
	}
}

func TestMiddlewareInflight(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	entered := make(chan struct{})
	release := make(chan struct{})
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		})
	}
	const key = "dxtra_proxy_inflight_requests"
	<-entered
	if got := scrape(t, m).value(t, key); got < 1 {
		t.Errorf("%s with one request inside = %v; want ≥ 1", key, got)
	}
	<-entered
	if got := scrape(t, m).value(t, key); got != 2 {
		t.Errorf("%s with two requests blocked = %v; want 2", key, got)
	}
	close(release)
	wg.Wait()
	s := scrape(t, m)
	if got := s.value(t, key); got != 0 {
		t.Errorf("%s after both returned = %v; want 0", key, got)
	}
	if got := s.value(t, `dxtra_proxy_requests_total{code="200",method="GET"}`); got != 2 {
		t.Errorf("requests_total after both returned = %v; want 2", got)
	}
}

func TestMiddlewareFlushPassesThrough(t *testing.T) {
	tests := []struct {
		name  string
		flush func(w http.ResponseWriter) error
	}{
		{"http.Flusher", func(w http.ResponseWriter) error {
			f, ok := w.(http.Flusher)
			if !ok {
				return errors.New("not an http.Flusher")
			}
			f.Flush()
			return nil
		}},
		{"ResponseController", func(w http.ResponseWriter) error {
			return http.NewResponseController(w).Flush()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(prometheus.NewRegistry(), BuildInfo{})
			release := make(chan struct{})
			flushErr := make(chan error, 1)
			srv, served := newServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "first\n")
				flushErr <- tt.flush(w)
				<-release
				io.WriteString(w, "second\n")
			}))
			defer func() {
				select {
				case <-release:
				default:
					close(release) // unblock the handler when the test failed early
				}
			}()

			type line struct {
				resp *http.Response
				text string
				err  error
			}
			got := make(chan line, 1)
			go func() {
				resp, err := srv.Client().Get(srv.URL + "/stream")
				if err != nil {
					got <- line{err: err}
					return
				}
				text, err := bufio.NewReader(resp.Body).ReadString('\n')
				got <- line{resp, text, err}
			}()
			var first line
			select {
			case first = <-got:
			case <-time.After(failAfter):
				t.Fatalf("first chunk not received within %v while the handler waits: the flush did not pass through", failAfter)
			}
			if first.err != nil {
				t.Fatalf("read first chunk: %v", first.err)
			}
			defer first.resp.Body.Close()
			if first.text != "first\n" {
				t.Errorf("first chunk = %q; want %q", first.text, "first\n")
			}
			if err := <-flushErr; err != nil {
				t.Errorf("flush through the middleware: %v", err)
			}
			close(release)
			rest, err := io.ReadAll(first.resp.Body)
			if err != nil || string(rest) != "second\n" {
				t.Errorf("rest of body = %q, %v; want %q", rest, err, "second\n")
			}
			waitServed(t, served, 1)
			if got := scrape(t, m).value(t, `dxtra_proxy_requests_total{code="200",method="GET"}`); got != 1 {
				t.Errorf("requests_total for the streamed response = %v; want 1", got)
			}
		})
	}
}

// plainWriter is a ResponseWriter with nothing but the three basic methods.
type plainWriter struct{ h http.Header }

func (w *plainWriter) Header() http.Header         { return w.h }
func (w *plainWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *plainWriter) WriteHeader(int)             {}

// unwrapOnly hides its writer's methods except through Unwrap.
type unwrapOnly struct{ http.ResponseWriter }

func (u unwrapOnly) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// hijackable is a plainWriter that can be hijacked.
type hijackable struct{ plainWriter }

func (hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errors.New("test hijack")
}

func TestMiddlewareKeepsCapabilities(t *testing.T) {
	tests := []struct {
		name          string
		w             http.ResponseWriter
		wantHijacker  bool
		wantFlushErr  error // http.NewResponseController(w).Flush() through the middleware
		wantHijackErr string
	}{
		{"plain writer", &plainWriter{h: http.Header{}}, false, http.ErrNotSupported, http.ErrNotSupported.Error()},
		{"hijacker", &hijackable{plainWriter{h: http.Header{}}}, true, http.ErrNotSupported, "test hijack"},
		{"hijacker behind Unwrap", unwrapOnly{&hijackable{plainWriter{h: http.Header{}}}}, true, http.ErrNotSupported, "test hijack"},
		{"recorder (flushes, no hijack)", httptest.NewRecorder(), false, nil, http.ErrNotSupported.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(prometheus.NewRegistry(), BuildInfo{})
			var isHijacker bool
			var flushErr, hijackErr error
			m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, isHijacker = w.(http.Hijacker)
				rc := http.NewResponseController(w)
				flushErr = rc.Flush()
				_, _, hijackErr = rc.Hijack()
			})).ServeHTTP(tt.w, httptest.NewRequest(http.MethodGet, "/", nil))
			if isHijacker != tt.wantHijacker {
				t.Errorf("wrapped writer is http.Hijacker = %v; want %v", isHijacker, tt.wantHijacker)
			}
			if !errors.Is(flushErr, tt.wantFlushErr) {
				t.Errorf("ResponseController.Flush() = %v; want %v", flushErr, tt.wantFlushErr)
			}
			if hijackErr == nil || !strings.Contains(hijackErr.Error(), tt.wantHijackErr) {
				t.Errorf("ResponseController.Hijack() = %v; want an error containing %q", hijackErr, tt.wantHijackErr)
			}
		})
	}
}

func TestMiddlewareResponseControllerDeadlines(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	errs := make(chan error, 3)
	srv, served := newServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		errs <- rc.SetWriteDeadline(time.Now().Add(time.Minute))
		errs <- rc.SetReadDeadline(time.Now().Add(time.Minute))
		errs <- rc.EnableFullDuplex()
	}))
	do(t, srv.Client(), http.MethodGet, srv.URL+"/")
	waitServed(t, served, 1)
	for _, name := range []string{"SetWriteDeadline", "SetReadDeadline", "EnableFullDuplex"} {
		if err := <-errs; err != nil {
			t.Errorf("ResponseController.%s through the middleware = %v; want nil", name, err)
		}
	}
}

func TestMiddlewareHijackPassesThrough(t *testing.T) {
	tests := []struct {
		name   string
		hijack func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error)
	}{
		{"http.Hijacker", func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
			hj, ok := w.(http.Hijacker)
			if !ok {
				return nil, nil, errors.New("not an http.Hijacker")
			}
			return hj.Hijack()
		}},
		{"ResponseController", func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
			return http.NewResponseController(w).Hijack()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(prometheus.NewRegistry(), BuildInfo{})
			hijackErr := make(chan error, 1)
			srv, served := newServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, brw, err := tt.hijack(w)
				hijackErr <- err
				if err != nil {
					http.Error(w, err.Error(), http.StatusNotImplemented)
					return
				}
				defer conn.Close()
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
				brw.Flush()
				msg, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				brw.WriteString("echo " + msg)
				brw.Flush()
			}))

			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(failAfter))
			fmt.Fprintf(conn, "GET /upgrade HTTP/1.1\r\nHost: localhost\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read upgrade response: %v", err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade status = %d; want 101", resp.StatusCode)
			}
			if err := <-hijackErr; err != nil {
				t.Fatalf("hijack through the middleware: %v", err)
			}
			fmt.Fprintf(conn, "hello\n")
			if got, err := br.ReadString('\n'); err != nil || got != "echo hello\n" {
				t.Errorf("echo over the hijacked connection = %q, %v; want %q", got, err, "echo hello\n")
			}
			waitServed(t, served, 1)
			s := scrape(t, m)
			if got := s.value(t, `dxtra_proxy_requests_total{code="101",method="GET"}`); got != 1 {
				t.Errorf(`requests_total{code="101"} for a hijacked connection = %v; want 1`, got)
			}
			if got := s.value(t, "dxtra_proxy_inflight_requests"); got != 0 {
				t.Errorf("inflight after the hijacked connection ended = %v; want 0", got)
			}
		})
	}
}

func TestMiddlewareWebSocket(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	srv, served := newServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, msg); err != nil {
			return
		}
		c.Close(websocket.StatusNormalClosure, "")
	}))

	ctx, cancel := context.WithTimeout(context.Background(), failAfter)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/graphql", &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
		HTTPClient:   srv.Client(),
	})
	if err != nil {
		t.Fatalf("websocket dial through the middleware: %v", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols || c.Subprotocol() != "graphql-transport-ws" {
		t.Errorf("upgrade = %d %q; want 101 graphql-transport-ws", resp.StatusCode, c.Subprotocol())
	}
	// Inflight counts the open connection while the handler runs.
	if got := scrape(t, m).value(t, "dxtra_proxy_inflight_requests"); got != 1 {
		t.Errorf("inflight with an open WebSocket = %v; want 1", got)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != `{"type":"ping"}` {
		t.Fatalf("echo = %q, %v; want the ping", msg, err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("read after echo = %v; want a normal close", err)
	}
	waitServed(t, served, 1)
	s := scrape(t, m)
	if got := s.value(t, `dxtra_proxy_requests_total{code="101",method="GET"}`); got != 1 {
		t.Errorf(`requests_total{code="101"} for a WebSocket = %v; want 1`, got)
	}
	if got := s.value(t, "dxtra_proxy_inflight_requests"); got != 0 {
		t.Errorf("inflight after the WebSocket closed = %v; want 0", got)
	}
}

func TestMiddlewareConcurrent(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	codes := []int{200, 201, 404, 503}
	methods := []string{"GET", "POST", "BREW"}
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscan(r.URL.Query().Get("code"), &code)
		w.WriteHeader(code)
	}))
	const workers, perWorker = 8, 120 // perWorker is a multiple of len(codes)*len(methods)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range perWorker {
				code := codes[i%len(codes)]
				method := methods[(i/len(codes))%len(methods)]
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, fmt.Sprintf("/?code=%d", code), nil))
			}
		})
	}
	wg.Wait()
	s := scrape(t, m)
	want := float64(workers * perWorker / (len(codes) * len(methods)))
	for _, code := range codes {
		for _, method := range methods {
			label := method
			if method == "BREW" {
				label = "other"
			}
			key := fmt.Sprintf(`dxtra_proxy_requests_total{code="%d",method=%q}`, code, label)
			if got := s.value(t, key); got != want {
				t.Errorf("%s = %v; want %v", key, got, want)
			}
		}
		key := fmt.Sprintf(`dxtra_proxy_request_duration_seconds_count{code="%d"}`, code)
		if got, want := s.value(t, key), float64(workers*perWorker/len(codes)); got != want {
			t.Errorf("%s = %v; want %v", key, got, want)
		}
	}
	if got := s.value(t, "dxtra_proxy_inflight_requests"); got != 0 {
		t.Errorf("inflight = %v; want 0", got)
	}
}

func TestMiddlewareKeepsSecretsOutOfMetrics(t *testing.T) {
	const secret = "pat-0f8e1c2a-secret-value"
	m := New(prometheus.NewRegistry(), BuildInfo{})
	srv, served := newServer(t, m, statusHandler)
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/"+secret+"?token="+secret, strings.NewReader(secret))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Cookie", "session="+secret)
	req.Header.Set("X-Hasura-Role", secret)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitServed(t, served, 1)
	s := scrape(t, m)
	if strings.Contains(s.body, secret) {
		t.Errorf("/metrics contains a value from the request's path, query, headers or body")
	}
	if got := s.value(t, `dxtra_proxy_requests_total{code="200",method="POST"}`); got != 1 {
		t.Errorf("requests_total = %v; want 1", got)
	}
}

func TestCodeLabels(t *testing.T) {
	tests := []struct {
		status int
		want   string
	}{
		{-1, "other"}, {0, "other"}, {99, "other"}, {100, "100"}, {101, "101"},
		{200, "200"}, {404, "404"}, {599, "599"}, {600, "other"}, {1000, "other"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			if got := codeLabels[codeIndex(tt.status)]; got != tt.want {
				t.Errorf("codeLabels[codeIndex(%d)] = %q; want %q", tt.status, got, tt.want)
			}
		})
	}
}

// discardWriter is the cheapest possible ResponseWriter, so that the benchmark
// measures the middleware and not the recorder.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Flush()                      {}
func (w *discardWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, http.ErrNotSupported
}

// BenchmarkMiddleware compares a bare handler with the same handler behind the
// middleware; run with -benchmem: the difference is the middleware's cost.
func BenchmarkMiddleware(b *testing.B) {
	body := []byte(`{"data":{"ok":true}}`)
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
	m := New(prometheus.NewRegistry(), BuildInfo{})
	handlers := []struct {
		name string
		h    http.Handler
	}{
		{"bare", bare},
		{"metrics", m.Middleware(bare)},
	}
	for _, hh := range handlers {
		b.Run(hh.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, "/v1/graphql", nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				hh.h.ServeHTTP(w, req)
			}
		})
		b.Run(hh.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest(http.MethodPost, "/v1/graphql", nil)
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					hh.h.ServeHTTP(w, req)
				}
			})
		})
	}
}
