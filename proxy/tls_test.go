package proxy

import (
	"crypto/tls"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tlsUpstream is an HTTPS httptest upstream that counts TLS handshakes (ClientHellos,
// resumed ones included) and new TCP connections, and records the protocol of every
// request.
type tlsUpstream struct {
	srv        *httptest.Server
	URL        *url.URL
	caFile     string
	handshakes atomic.Int32
	conns      atomic.Int32
	h1, h2     atomic.Int32
}

func newTLSUpstream(t *testing.T, http2 bool) *tlsUpstream {
	t.Helper()
	u := &tlsUpstream{}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.ProtoMajor == 2 {
			u.h2.Add(1)
		} else {
			u.h1.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, bodyData)
	}))
	u.srv.EnableHTTP2 = http2
	u.srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		u.handshakes.Add(1)
		return nil, nil
	}}
	u.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.srv.StartTLS()
	t.Cleanup(u.srv.Close)
	u.URL, _ = url.Parse(u.srv.URL)
	u.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: u.srv.Certificate().Raw})
	if err := os.WriteFile(u.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestHTTPSUpstreamReusesConnections: through the Handler, with the transport cmd
// builds (NewTransport trusting the test CA through CAFile), an HTTPS upstream is
// spoken HTTP/2 when it offers it and HTTP/1.1 with keep-alive otherwise, and steady
// load after a warm-up causes no TLS handshake per request: none at all over HTTP/2
// (one multiplexed connection), at most one per concurrent client over HTTP/1.1 (a
// request may start before the previous one's connection is back in the idle pool).
func TestHTTPSUpstreamReusesConnections(t *testing.T) {
	const workers, perWorker = 8, 40
	tests := []struct {
		name        string
		http2       bool
		maxNewConns int32 // new handshakes allowed during the steady phase
	}{
		{"http2", true, 0},
		{"http1.1 keep-alive", false, workers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newTLSUpstream(t, tt.http2)
			tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: 5 * time.Second, CAFile: up.caFile})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(tr.CloseIdleConnections)
			tp := newTestProxy(t, up.URL, staticTokens{benchJWT}, Options{
				Transport:     tr,
				OnRequestDone: func(*http.Request, int, bool, string, time.Duration) {},
			})
			load := func(n int) {
				var wg sync.WaitGroup
				for range workers {
					wg.Go(func() {
						for range n {
							resp, err := tp.client.Post(tp.URL+"/v1/graphql", "application/json", strings.NewReader(benchQuery))
							if err != nil {
								t.Error(err)
								return
							}
							b, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							if resp.StatusCode != 200 || string(b) != bodyData {
								t.Errorf("response = %d %s; want 200 %s", resp.StatusCode, b, bodyData)
								return
							}
						}
					})
				}
				wg.Wait()
			}

			load(5) // warm-up: the connections get made
			warm := up.handshakes.Load()
			if warm == 0 {
				t.Fatal("no TLS handshake during warm-up")
			}
			load(perWorker)
			t.Logf("handshakes: %d during warm-up, %d during %d steady requests", warm, up.handshakes.Load()-warm, workers*perWorker)
			if n := up.handshakes.Load() - warm; n > tt.maxNewConns {
				t.Errorf("%d new TLS handshakes for %d requests after warm-up; want at most %d", n, workers*perWorker, tt.maxNewConns)
			}
			if hs, cs := up.handshakes.Load(), up.conns.Load(); hs != cs {
				t.Errorf("handshakes = %d, connections = %d; want one handshake per connection", hs, cs)
			}
			total := int32(workers * (5 + perWorker))
			if tt.http2 {
				if got := up.h2.Load(); got != total {
					t.Errorf("HTTP/2 requests = %d of %d (HTTP/1.1: %d); want all", got, total, up.h1.Load())
				}
			} else if got := up.h1.Load(); got != total {
				t.Errorf("HTTP/1.1 requests = %d of %d (HTTP/2: %d); want all", got, total, up.h2.Load())
			}
		})
	}
}
