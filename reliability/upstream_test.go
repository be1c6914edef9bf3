package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// faultServer is a hand-written HTTP/1.1 upstream that misbehaves on request: it
// answers by path, and can cut, reset, stall or close its connections.
//
//	/ok                a 200 with a small JSON body, keep-alive
//	/truncate-cl       Content-Length 100000, 1000 bytes, then FIN
//	/truncate-chunked  chunked, one 1000-byte chunk, then FIN (no last chunk)
//	/reset             Content-Length 100000, 1000 bytes, then RST
//	/slow-headers      no answer until the proxy gives up (or 10 s)
//	/close-idle        a 200 (keep-alive, no Connection: close), then FIN while idle
//	/close-on-next     a 200 (keep-alive), then the connection is closed unanswered
//	                   when the next request on it arrives: the crossing of a request
//	                   with an upstream's keep-alive close, made deterministic
type faultServer struct {
	tcpServer

	crossings  atomic.Int64  // requests that arrived on a /close-on-next connection
	idleClosed chan struct{} // one value per /close-idle connection the proxy let go
}

const okBody = `{"data":{"ok":true}}`

func newFaultServer(t *testing.T) *faultServer {
	t.Helper()
	s := &faultServer{idleClosed: make(chan struct{}, 100)}
	s.start(t, s.serve)
	return s
}

func (s *faultServer) serve(c net.Conn) {
	br := bufio.NewReader(c)
	closeOnNext := false
	for {
		if closeOnNext {
			// Read the whole request, so that closing sends a plain FIN (no RST for
			// unread data), then close without answering.
			if req, err := http.ReadRequest(br); err == nil {
				_, _ = io.Copy(io.Discard, req.Body)
				s.crossings.Add(1)
			}
			return
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		head200 := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		switch req.URL.Path {
		case "/ok":
			fmt.Fprintf(c, "%sContent-Length: %d\r\n\r\n%s", head200, len(okBody), okBody)
		case "/truncate-cl":
			fmt.Fprintf(c, "%sContent-Length: 100000\r\n\r\n%s", head200, strings.Repeat("x", 1000))
			return
		case "/truncate-chunked":
			fmt.Fprintf(c, "%sTransfer-Encoding: chunked\r\n\r\n3e8\r\n%s\r\n", head200, strings.Repeat("x", 1000))
			return
		case "/reset":
			fmt.Fprintf(c, "%sContent-Length: 100000\r\n\r\n%s", head200, strings.Repeat("x", 1000))
			_ = c.(*net.TCPConn).SetLinger(0)
			return
		case "/slow-headers":
			// The proxy sends nothing more on this connection until it has an answer:
			// the read ends when the proxy gives up and closes it.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = br.ReadByte()
			return
		case "/close-idle":
			fmt.Fprintf(c, "%sContent-Length: %d\r\n\r\n%s", head200, len(okBody), okBody)
			_ = c.(*net.TCPConn).CloseWrite()
			_, _ = io.Copy(io.Discard, br) // until the proxy closes its end
			s.idleClosed <- struct{}{}
			return
		case "/close-on-next":
			fmt.Fprintf(c, "%sContent-Length: %d\r\n\r\n%s", head200, len(okBody), okBody)
			closeOnNext = true
		default:
			fmt.Fprintf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
		}
	}
}

// startFaultProxy starts a proxy in front of a fresh faultServer, with tokens from
// the fake and DXTRA_UPSTREAM_TIMEOUT=1s.
func startFaultProxy(t *testing.T) (*proc, *faultServer) {
	t.Helper()
	fake := newFake(t, dxtratest.Options{})
	up := newFaultServer(t)
	p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT(), "DXTRA_API_URL", up.URL, "DXTRA_UPSTREAM_TIMEOUT", "1s"))
	waitReady(t, p)
	return p, up
}

// result is one request's outcome as a client sees it.
type result struct {
	status  int
	body    string
	err     error // transport error, or an error reading the body
	readErr bool  // err happened while reading the body (headers had arrived)
	took    time.Duration
}

func send(c *http.Client, method, url, body string) result {
	start := time.Now()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, body: string(b), err: err, readErr: err != nil, took: time.Since(start)}
}

// stillHealthy checks that the proxy serves /ok and /healthz after a fault.
func stillHealthy(t *testing.T, c *http.Client, p *proc) {
	t.Helper()
	if r := send(c, http.MethodGet, p.URL("/ok"), ""); r.err != nil || r.status != http.StatusOK || r.body != okBody {
		t.Errorf("GET /ok after the fault = %d %q %v; want 200 %s", r.status, r.body, r.err, okBody)
	}
	if r := send(c, http.MethodGet, "http://"+p.Admin+"/healthz", ""); r.status != http.StatusOK {
		t.Errorf("/healthz after the fault = %d %v; want 200", r.status, r.err)
	}
}

// TestUpstreamConnectionRefused: nothing listens at DXTRA_API_URL → 502
// upstream-unreachable, promptly, and the proxy stays up.
func TestUpstreamConnectionRefused(t *testing.T) {
	t.Parallel()
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT(), "DXTRA_API_URL", "http://"+freePort(t)))
	waitReady(t, p)
	c, _ := newClient(t, true)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		r := send(c, method, p.URL(graphqlPath), graphqlQuery)
		if r.err != nil || r.status != http.StatusBadGateway || errorCode(r.body) != "upstream-unreachable" {
			t.Errorf("%s with the upstream refusing connections = %d %q %v; want 502 upstream-unreachable", method, r.status, r.body, r.err)
		}
		if r.took > 5*time.Second {
			t.Errorf("the 502 took %s; want it promptly", r.took)
		}
	}
	if r := send(c, http.MethodGet, "http://"+p.Admin+"/healthz", ""); r.status != http.StatusOK {
		t.Errorf("/healthz = %d; want 200", r.status)
	}
}

// TestUpstreamResetMidResponse: the upstream dies after sending the headers and part of
// the body (FIN with a Content-Length or chunked body outstanding, or RST). The client
// must be able to tell: its read fails (the proxy aborts the response rather than
// ending it cleanly), promptly, never a hang; and the proxy keeps serving.
func TestUpstreamResetMidResponse(t *testing.T) {
	t.Parallel()
	p, _ := startFaultProxy(t)
	c, _ := newClient(t, true)
	for _, path := range []string{"/truncate-cl", "/truncate-chunked", "/reset"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			r := send(c, http.MethodGet, p.URL(path), "")
			t.Logf("GET %s: status %d, %d body bytes, err %v, after %s", path, r.status, len(r.body), r.err, r.took.Round(time.Millisecond))
			switch {
			case r.err == nil && r.status == http.StatusOK:
				t.Errorf("GET %s = 200 with a clean %d-byte body; want the truncation to show as a read error", path, len(r.body))
			case r.err == nil && r.status != http.StatusBadGateway:
				t.Errorf("GET %s = %d; want a failed read or 502", path, r.status)
			case r.err != nil && !r.readErr && !errors.Is(r.err, io.ErrUnexpectedEOF) && !errors.Is(r.err, io.EOF):
				t.Logf("transport error before the headers: %v", r.err)
			}
			if r.took > 5*time.Second {
				t.Errorf("GET %s took %s; want it to end promptly", path, r.took)
			}
			stillHealthy(t, c, p)
		})
	}
}

// TestUpstreamSlowHeadersTimeout: the upstream accepts the request but sends no headers;
// after DXTRA_UPSTREAM_TIMEOUT (1 s here) the caller gets 504 upstream-timeout.
func TestUpstreamSlowHeadersTimeout(t *testing.T) {
	t.Parallel()
	p, _ := startFaultProxy(t)
	c, _ := newClient(t, true)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		r := send(c, method, p.URL("/slow-headers"), graphqlQuery)
		if r.err != nil || r.status != http.StatusGatewayTimeout || errorCode(r.body) != "upstream-timeout" {
			t.Errorf("%s /slow-headers = %d %q %v; want 504 upstream-timeout", method, r.status, r.body, r.err)
		}
		if r.took < time.Second || r.took > 3*time.Second {
			t.Errorf("%s /slow-headers answered after %s; want about DXTRA_UPSTREAM_TIMEOUT (1 s)", method, r.took)
		}
	}
	stillHealthy(t, c, p)
}

// TestUpstreamKeepAliveClosedWhileIdle: the upstream closes a keep-alive connection
// (without announcing it) after answering; once the proxy has let go of it, the next
// requests, POSTs included, go out on a new connection and succeed.
func TestUpstreamKeepAliveClosedWhileIdle(t *testing.T) {
	t.Parallel()
	p, up := startFaultProxy(t)
	c, _ := newClient(t, true)
	for i := range 5 {
		if r := send(c, http.MethodGet, p.URL("/close-idle"), ""); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("GET /close-idle = %d %v; want 200", r.status, r.err)
		}
		select {
		case <-up.idleClosed:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the proxy never closed its end of the connection the upstream closed", i)
		}
		if r := send(c, http.MethodPost, p.URL("/ok"), graphqlQuery); r.err != nil || r.status != http.StatusOK || r.body != okBody {
			t.Errorf("round %d: POST after the upstream closed the idle connection = %d %q %v; want 200", i, r.status, r.body, r.err)
		}
	}
}

// TestUpstreamKeepAliveClosedAsRequestArrives: the race every keep-alive proxy meets —
// the upstream closes an idle connection (its keep-alive timeout) just as the proxy
// sends the next request on it. The fault server makes it deterministic: it reads the
// next request's first byte and closes the connection unanswered. The request never
// got an answer, so the proxy may send it again on a new connection; a caller must not
// see a spurious 502. Go's Transport retries this by itself only for idempotent
// requests (GET); GraphQL is POST.
func TestUpstreamKeepAliveClosedAsRequestArrives(t *testing.T) {
	t.Parallel()
	p, up := startFaultProxy(t)
	c, _ := newClient(t, true)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			const rounds = 5
			crossings0 := up.crossings.Load()
			failed := 0
			for i := range rounds {
				if r := send(c, http.MethodGet, p.URL("/close-on-next"), ""); r.err != nil || r.status != http.StatusOK {
					t.Fatalf("GET /close-on-next = %d %v; want 200", r.status, r.err)
				}
				r := send(c, method, p.URL("/ok"), graphqlQuery)
				if r.err != nil || r.status != http.StatusOK || r.body != okBody {
					failed++
					t.Errorf("round %d: %s on a connection the upstream closed as the request arrived = %d %q %v; want 200", i, method, r.status, strings.TrimSpace(r.body), r.err)
				}
			}
			if n := up.crossings.Load() - crossings0; n != rounds {
				t.Fatalf("%d of %d requests crossed the upstream's close; the scenario did not happen as designed", n, rounds)
			}
			t.Logf("%s: %d of %d crossed requests failed", method, failed, rounds)
		})
	}
}

// TestUpstreamFaultsLeakNothing: after rounds of every upstream fault, once idle
// connections are gone on both sides, the proxy runs as many goroutines
// (go_goroutines) and holds as many file descriptors as before.
func TestUpstreamFaultsLeakNothing(t *testing.T) {
	t.Parallel()
	p, up := startFaultProxy(t)
	c, tr := newClient(t, true)

	// counts drops idle connections on both sides and reads the proxy's goroutines
	// and fds; the scrape itself costs a goroutine or two for a moment.
	counts := func() (goroutines, fds int) {
		tr.CloseIdleConnections()
		up.closeAll()
		return int(scrape(t, p.Admin).get("go_goroutines")), p.FDs()
	}

	for range 5 {
		send(c, http.MethodGet, p.URL("/ok"), "")
	}
	// The baseline: the lowest counts over a second once idle connections are gone.
	g0, f0 := counts()
	for range 50 {
		g, f := counts()
		g0, f0 = min(g0, g), min(f0, f)
		time.Sleep(20 * time.Millisecond) // spacing the samples
	}

	const rounds = 10
	var wg sync.WaitGroup
	for range rounds {
		for _, path := range []string{"/truncate-cl", "/truncate-chunked", "/reset", "/close-idle"} {
			wg.Go(func() { send(c, http.MethodGet, p.URL(path), "") })
		}
		wg.Go(func() {
			send(c, http.MethodGet, p.URL("/close-on-next"), "")
			send(c, http.MethodPost, p.URL("/ok"), graphqlQuery)
		})
		wg.Go(func() { send(c, http.MethodPost, p.URL(graphqlPath), graphqlQuery) })
		for range 4 {
			wg.Go(func() { send(c, http.MethodPost, p.URL("/ok"), graphqlQuery) })
		}
	}
	for range 3 {
		wg.Go(func() { send(c, http.MethodPost, p.URL("/slow-headers"), graphqlQuery) })
	}
	// A client that hangs up mid-wait.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL("/slow-headers"), nil)
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
	}
	cancel()
	wg.Wait()
	for range len(up.idleClosed) {
		<-up.idleClosed
	}
	var g1, f1 int
	deadline := time.Now().Add(15 * time.Second)
	for {
		g1, f1 = counts()
		if g1 <= g0+2 && f1 <= f0+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("before: %d goroutines, %d fds; after %d rounds of faults: %d goroutines, %d fds", g0, f0, rounds, g1, f1)
	if g1 > g0+2 {
		t.Errorf("go_goroutines grew from %d to %d across the faults and stayed there for 15 s; a leak", g0, g1)
	}
	if f1 > f0+1 {
		t.Errorf("open fds grew from %d to %d across the faults and stayed there for 15 s; a leak", f0, f1)
	}
	stillHealthy(t, c, p)
}

// tcpServer is the loopback listener under the hand-written upstreams of this
// package: it runs serve on each accepted connection, closes the connection when
// serve returns, and tracks the open ones so that a test can cut them all. The
// test's cleanup closes the listener and every connection and waits for the
// goroutines.
type tcpServer struct {
	URL string

	wg   sync.WaitGroup
	mu   sync.Mutex
	open map[net.Conn]bool
}

func (s *tcpServer) start(t *testing.T, serve func(net.Conn)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.URL, s.open = "http://"+ln.Addr().String(), map[net.Conn]bool{}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.open[c] = true
			s.mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.open, c)
					s.mu.Unlock()
				}()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.closeAll()
		s.wg.Wait()
	})
}

// closeAll closes every open connection (the proxy's idle ones included).
func (s *tcpServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.open {
		c.Close()
	}
}
