package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestBodyLimit(t *testing.T) {
	const limit = 1000
	a := newAuthority()
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{MaxBodyBytes: limit})
	tests := []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"at the limit", limit, false, 200},
		{"at the limit, chunked", limit, true, 200},
		{"empty, chunked", 0, true, 200},
		{"one over", limit + 1, false, 413},
		{"one over, chunked", limit + 1, true, 413},
		{"far over, chunked", 50 * limit, true, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := up.hits.Load()
			before := len(up.requests())
			body := bytes.Repeat([]byte("a"), tt.size)
			req, _ := http.NewRequest(http.MethodPost, tp.URL+"/v1/graphql", bytes.NewReader(body))
			if tt.chunked {
				req.Body = io.NopCloser(bytes.NewReader(body))
				req.ContentLength = -1
			}
			resp, err := tp.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			tp.nextDone(t)
			if tt.status != 200 {
				wantGraphQLError(t, resp, b, tt.status, CodeBodyTooLarge)
				if n := up.hits.Load() - hits; n != 0 {
					t.Errorf("upstream reached %d times; want 0", n)
				}
				return
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d (%s); want 200", resp.StatusCode, b)
			}
			got := up.requests()[before]
			if !bytes.Equal(got.Body, body) {
				t.Errorf("upstream body is %d bytes; want the client's %d", len(got.Body), len(body))
			}
			if got.ContentLength != int64(tt.size) || got.TransferEncoding != nil {
				t.Errorf("upstream framing: Content-Length %d, Transfer-Encoding %q; want %d and none",
					got.ContentLength, got.TransferEncoding, tt.size)
			}
		})
	}
}

// TestBodyLimitExpectContinue: a declared oversized body is refused before the client
// sends it.
func TestBodyLimitExpectContinue(t *testing.T) {
	a := newAuthority()
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{MaxBodyBytes: 100})
	resp, b := raw(t, tp.addr, "POST /v1/graphql HTTP/1.1\r\nHost: "+tp.addr+
		"\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
	wantGraphQLError(t, resp, b, http.StatusRequestEntityTooLarge, CodeBodyTooLarge)
	if up.hits.Load() != 0 {
		t.Errorf("upstream reached; want not")
	}
	tp.nextDone(t)
}

func TestTokenUnavailable(t *testing.T) {
	a := newAuthority()
	tokens := newFakeTokens(a)
	tokens.unavailable = true
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, tokens, Options{TokenWait: 100 * time.Millisecond})
	resp, b := tp.post(t, "/v1/graphql", `{}`, nil)
	wantGraphQLError(t, resp, b, http.StatusServiceUnavailable, CodeTokenUnavailable)
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra <= 0 {
		t.Errorf("Retry-After = %q; want a positive number of seconds", resp.Header.Get("Retry-After"))
	}
	if up.hits.Load() != 0 {
		t.Errorf("upstream reached without a token")
	}
	if d := tp.nextDone(t); d.status != http.StatusServiceUnavailable {
		t.Errorf("OnRequestDone status = %d; want 503", d.status)
	}
}

// TestClientGoneIsNotAnError: a client hanging up while its request waits is recorded
// as 499 and logs nothing at warn or above.
func TestClientGoneIsNotAnError(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	a := newAuthority()
	tokens := newFakeTokens(a)
	tokens.unavailable = true
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, tokens, Options{TokenWait: time.Hour, Logger: zap.New(core)})

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tp.URL+"/v1/graphql", strings.NewReader(`{}`))
	errc := make(chan error, 1)
	go func() {
		resp, err := tp.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-tokens.waiting:
	case <-time.After(failAfter):
		t.Fatal("request never waited for a token")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client error = %v; want context.Canceled", err)
	}
	if d := tp.nextDone(t); d.status != StatusClientClosedRequest {
		t.Errorf("OnRequestDone status = %d; want %d", d.status, StatusClientClosedRequest)
	}
	for _, e := range logs.All() {
		t.Errorf("logged %s %q %v; want nothing at warn or above", e.Level, e.Message, e.ContextMap())
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := &url.URL{Scheme: "http", Host: l.Addr().String()}
	l.Close()
	core, logs := observer.New(zapcore.WarnLevel)
	tp := newTestProxy(t, dead, newFakeTokens(newAuthority()), Options{Logger: zap.New(core)})
	for _, accept := range []string{"", graphQLResponseType + ", application/json;q=0.9"} {
		resp, b := tp.post(t, "/v1/graphql", `{}`, http.Header{"Accept": {accept}})
		wantGraphQLError(t, resp, b, http.StatusBadGateway, CodeUpstreamUnreachable)
		want := "application/json"
		if accept != "" {
			want = graphQLResponseType
		}
		if ct := resp.Header.Get("Content-Type"); ct != want {
			t.Errorf("Accept %q: Content-Type = %q; want %q", accept, ct, want)
		}
		if d := tp.nextDone(t); d.status != http.StatusBadGateway {
			t.Errorf("OnRequestDone status = %d; want 502", d.status)
		}
	}
	if logs.FilterMessage("request failed").Len() != 2 {
		t.Errorf("logged %d request failures; want 2", logs.FilterMessage("request failed").Len())
	}
}

func TestUpstreamTimeout(t *testing.T) {
	a := newAuthority()
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the upstream closes
	tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{Transport: tr})
	resp, b := tp.post(t, "/v1/graphql", `{}`, nil)
	wantGraphQLError(t, resp, b, http.StatusGatewayTimeout, CodeUpstreamTimeout)
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		clientGone bool
		status     int
		code       string
	}{
		{"guard", errHostNotAllowed, false, 403, CodeHostNotAllowed},
		{"guard while client gone", errBodyTooLarge, true, 413, CodeBodyTooLarge},
		{"client gone", context.Canceled, true, StatusClientClosedRequest, "client-closed-request"},
		{"no token", &tokenError{err: context.DeadlineExceeded}, false, 503, CodeTokenUnavailable},
		{"renewal failed", &tokenError{renewal: true, err: errors.New("x")}, false, 503, CodeTokenUnavailable},
		{"deadline", context.DeadlineExceeded, false, 504, CodeUpstreamTimeout},
		{"net timeout", &net.OpError{Op: "read", Err: timeoutErr{}}, false, 504, CodeUpstreamTimeout},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, false, 502, CodeUpstreamUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code, msg := classify(tt.err, tt.clientGone)
			if status != tt.status || code != tt.code || msg == "" {
				t.Errorf("classify(%v, %v) = %d %q %q; want %d %q and a message", tt.err, tt.clientGone, status, code, msg, tt.status, tt.code)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestStreaming: the first flushed chunk of a streamed answer reaches the client while
// the upstream is still writing.
func TestStreaming(t *testing.T) {
	tests := []struct {
		name, contentType, first string
	}{
		{"chunked JSON lines", "application/json", `{"data":{"n":1}}` + "\n"},
		{"server-sent events", "text/event-stream", "event: next\n"},
		{"multipart", "multipart/mixed; boundary=-", "\r\n---\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthority()
			release := make(chan struct{})
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				io.WriteString(w, tt.first)
				http.NewResponseController(w).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, "rest\n")
			})
			tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{})
			type first struct {
				line string
				br   *bufio.Reader
				body io.Closer
				err  error
			}
			got := make(chan first, 1)
			go func() {
				resp, err := tp.client.Get(tp.URL + "/v1/graphql")
				if err != nil {
					got <- first{err: err}
					return
				}
				br := bufio.NewReader(resp.Body)
				line, err := br.ReadString('\n')
				got <- first{line, br, resp.Body, err}
			}()
			var f first
			select {
			case f = <-got:
			case <-time.After(failAfter):
				close(release)
				<-got
				t.Fatal("first chunk did not arrive while the upstream was still writing")
			}
			close(release)
			if f.err != nil {
				t.Fatal(f.err)
			}
			defer f.body.Close()
			if want := tt.first[:strings.IndexByte(tt.first, '\n')+1]; f.line != want {
				t.Errorf("first line = %q; want %q", f.line, want)
			}
			rest, err := io.ReadAll(f.br)
			if err != nil || !strings.HasSuffix(string(rest), "rest\n") {
				t.Errorf("rest = %q, %v; want it to end with rest", rest, err)
			}
		})
	}
}

func TestLargeResponse(t *testing.T) {
	const size = 10 << 20
	payload := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	rng.Read(payload)
	errorsLike := append([]byte(`{"errors":[`), payload...)
	tests := []struct {
		name    string
		body    []byte
		chunked bool
	}{
		{"content length", payload, false},
		{"chunked", payload, true},
		{"chunked, starts like an error envelope", errorsLike, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthority()
			tokens := newFakeTokens(a)
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if !tt.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(tt.body)))
				}
				for b := tt.body; len(b) > 0; {
					n := min(len(b), 1<<20)
					w.Write(b[:n])
					b = b[n:]
					if tt.chunked {
						http.NewResponseController(w).Flush()
					}
				}
			})
			tp := newTestProxy(t, up.URL, tokens, Options{})
			resp, err := tp.client.Get(tp.URL + "/v1/graphql")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			if err != nil || n != int64(len(tt.body)) {
				t.Fatalf("read %d bytes, %v; want %d", n, err, len(tt.body))
			}
			if got, want := h.Sum(nil), sha256.Sum256(tt.body); !bytes.Equal(got, want[:]) {
				t.Errorf("sha256 = %x; want %x", got, want)
			}
			if tokens.renews.Load() != 0 {
				t.Errorf("Renew called for a data response")
			}
		})
	}
}

// emptyTokens answers no token and no error, a broken source.
type emptyTokens struct{ staticTokens }

func (emptyTokens) Token(context.Context) (string, time.Time, error) { return "", time.Time{}, nil }

func TestEmptyTokenIsUnavailable(t *testing.T) {
	a := newAuthority()
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, emptyTokens{}, Options{})
	resp, b := tp.post(t, "/v1/graphql", `{}`, nil)
	wantGraphQLError(t, resp, b, http.StatusServiceUnavailable, CodeTokenUnavailable)
	if up.hits.Load() != 0 {
		t.Errorf("upstream reached with an empty token")
	}
}
