package proxy

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"testing/synctest"
	"time"
)

func TestNewTransportSettings(t *testing.T) {
	tests := []struct {
		name    string
		in      time.Duration
		wantRHT time.Duration
	}{
		{"default", 0, DefaultResponseHeaderTimeout},
		{"configured", 3 * time.Second, 3 * time.Second},
		{"unbounded", -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: tt.in})
			if err != nil {
				t.Fatal(err)
			}
			if tr.ResponseHeaderTimeout != tt.wantRHT {
				t.Errorf("ResponseHeaderTimeout = %v; want %v", tr.ResponseHeaderTimeout, tt.wantRHT)
			}
			if tr.MaxIdleConnsPerHost < 100 || !tr.DisableCompression || !tr.ForceAttemptHTTP2 {
				t.Errorf("MaxIdleConnsPerHost %d, DisableCompression %v, ForceAttemptHTTP2 %v; want ≥100, true, true",
					tr.MaxIdleConnsPerHost, tr.DisableCompression, tr.ForceAttemptHTTP2)
			}
			if tr.Proxy == nil || reflect.ValueOf(tr.Proxy).Pointer() != reflect.ValueOf(http.ProxyFromEnvironment).Pointer() {
				t.Errorf("Proxy is not http.ProxyFromEnvironment")
			}
		})
	}
}

// TestNewTransportCAFile: an upstream with a private CA is trusted only with the CA
// bundle, and HTTP/2 is negotiated over TLS.
func TestNewTransportCAFile(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}

	get := func(tr *http.Transport) (*http.Response, error) {
		t.Cleanup(tr.CloseIdleConnections)
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	plain, err := NewTransport(TransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(plain); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without CAFile: error = %v; want a certificate error", err)
	}
	withCA, err := NewTransport(TransportOptions{CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := get(withCA)
	if err != nil {
		t.Fatalf("with CAFile: %v", err)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol = %s; want HTTP/2", resp.Proto)
	}

	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	for _, f := range []string{bad, filepath.Join(t.TempDir(), "missing.pem")} {
		if _, err := NewTransport(TransportOptions{CAFile: f}); err == nil {
			t.Errorf("NewTransport(CAFile %s) error = nil; want an error", filepath.Base(f))
		}
	}
}

func TestWaitCtx(t *testing.T) {
	t.Run("lazy until waited on", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var c waitCtx
			c.init(context.Background(), time.Now().Add(time.Second))
			if err := c.Err(); err != nil {
				t.Errorf("Err() = %v before the deadline; want nil", err)
			}
			if d, ok := c.Deadline(); !ok || !d.Equal(time.Now().Add(time.Second)) {
				t.Errorf("Deadline() = %v, %v", d, ok)
			}
			time.Sleep(2 * time.Second)
			if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Err() = %v after the deadline; want DeadlineExceeded", err)
			}
			select {
			case <-c.Done():
			default:
				t.Errorf("Done() not closed after the deadline")
			}
		})
	})
	t.Run("deadline fires while waiting", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var c waitCtx
			c.init(context.Background(), time.Now().Add(time.Second))
			start := time.Now()
			<-c.Done()
			if waited := time.Since(start); waited != time.Second {
				t.Errorf("waited %v; want 1s", waited)
			}
			if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Err() = %v; want DeadlineExceeded", err)
			}
			c.release()
		})
	})
	t.Run("parent cancellation while waiting", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			parent, cancel := context.WithCancel(context.Background())
			var c waitCtx
			c.init(parent, time.Now().Add(time.Hour))
			go func() {
				time.Sleep(time.Second)
				cancel()
			}()
			<-c.Done()
			if err := c.Err(); !errors.Is(err, context.Canceled) {
				t.Errorf("Err() = %v; want Canceled", err)
			}
			c.release()
		})
	})
	t.Run("earlier parent deadline wins", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			parent, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			var c waitCtx
			c.init(parent, time.Now().Add(time.Hour))
			if d, _ := c.Deadline(); !d.Equal(time.Now().Add(time.Second)) {
				t.Errorf("Deadline() = %v; want the parent's", d)
			}
		})
	})
	t.Run("release ends the wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var c waitCtx
			c.init(context.Background(), time.Now().Add(time.Hour))
			c.Done()
			c.release()
			select {
			case <-c.Done():
			default:
				t.Errorf("Done() open after release")
			}
		})
	})
}

func TestReadBody(t *testing.T) {
	const limit = 10_000
	data := []byte(strings.Repeat("0123456789", 1000)) // exactly limit
	tests := []struct {
		name    string
		r       io.Reader
		cl      int64
		want    []byte
		wantErr error
	}{
		{"known length", strings.NewReader(string(data)), limit, data, nil},
		{"unknown length", strings.NewReader(string(data)), -1, data, nil},
		{"one byte at a time", iotest.OneByteReader(strings.NewReader(string(data))), -1, data, nil},
		{"data with EOF", iotest.DataErrReader(strings.NewReader(string(data))), -1, data, nil},
		{"declared too large", strings.NewReader(""), limit + 1, nil, errTooLarge},
		{"too large", strings.NewReader(string(data) + "x"), -1, nil, errTooLarge},
		{"max bytes reader", http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(string(data))), 5), -1, nil, errTooLarge},
		{"read error", iotest.ErrReader(io.ErrUnexpectedEOF), -1, nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := readBody(tt.r, tt.cl, limit)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("readBody() error = %v; want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if string(b) != string(tt.want) {
				t.Errorf("readBody() = %d bytes; want %d", len(b), len(tt.want))
			}
		})
	}
}

// writeCountingConn counts the Write calls made on an upstream connection.
type writeCountingConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c writeCountingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestSmallRequestOneWrite: the buffered body reaches the Transport in a form net/http
// treats as in-memory, so request line, headers and a small body leave in one write
// (one TCP segment, not a header flush and then the body) — for the first attempt and
// for a replay with a renewed token alike.
func TestSmallRequestOneWrite(t *testing.T) {
	a := newAuthority()
	tokens := newFakeTokens(a)
	up := newUpstream(t, hasuraHandler(a, false))
	var writes atomic.Int32
	tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return writeCountingConn{c, &writes}, nil
	}
	tp := newTestProxy(t, up.URL, tokens, Options{Transport: tr})
	body := graphQLBody(200)

	for i := range 3 {
		if resp, b := tp.post(t, "/v1/graphql", body, nil); resp.StatusCode != 200 || string(b) != bodyData {
			t.Fatalf("request %d: response = %d %s; want 200 %s", i, resp.StatusCode, b, bodyData)
		}
		if got := writes.Load(); got != int32(i+1) {
			t.Fatalf("after %d requests, %d writes upstream; want %d", i+1, got, i+1)
		}
	}
	a.revoke(tokens.current()) // next: invalid-jwt, renewal, replay
	writes.Store(0)
	if resp, b := tp.post(t, "/v1/graphql", body, nil); resp.StatusCode != 200 || string(b) != bodyData {
		t.Fatalf("replayed request: response = %d %s; want 200 %s", resp.StatusCode, b, bodyData)
	}
	if got := writes.Load(); got != 2 {
		t.Errorf("rejected request and its replay: %d writes upstream; want 2", got)
	}
	reqs := up.requests()
	for i, r := range reqs {
		if string(r.Body) != body {
			t.Errorf("upstream request %d body = %d bytes; want the client's %d", i, len(r.Body), len(body))
		}
	}
}
