package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dxtra-ai/dxtra-proxy/metrics"
	"github.com/dxtra-ai/dxtra-proxy/proxy"
)

// staticTokens is a token source that always holds one valid token.
type staticTokens struct{ jwt string }

func (s staticTokens) Token(context.Context) (string, time.Time, error) {
	return s.jwt, time.Now().Add(time.Hour), nil
}

func (s staticTokens) Renew(context.Context, string) (string, time.Time, error) {
	return s.jwt, time.Now().Add(time.Hour), nil
}

func (s staticTokens) Changed() <-chan struct{} { return nil }

// BenchmarkHandlerChain measures the program's request path — metrics
// middleware, in-flight counter and proxy handler, as serve wires them, with
// an info-level logger — against the same chain with the metrics middleware
// removed. Compare with benchstat:
//
//	go test -run '^$' -bench HandlerChain -count 10 -cpu 1 ./cmd/dxtra-proxy > bench.txt
//	benchstat -col /metrics bench.txt
//
// (-cpu 1 runs client, proxy and upstream on one P: on a small machine that cuts the
// run-to-run noise from about ±10 % to ±2 %, so that a 5 % budget can be checked.)
func BenchmarkHandlerChain(b *testing.B) {
	small := []byte(`{"data":{"users_by_pk":{"id":42,"name":"Ada","email":"ada@example.com","role":"user","created_at":"2024-01-01T00:00:00Z"}}}`)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(small)
	}))
	defer up.Close()
	target, _ := url.Parse(up.URL)
	body := []byte(`{"query":"query GetUser($id: Int!) { users_by_pk(id: $id) { id name email role created_at } }","variables":{"id":42},"operationName":"GetUser"}`)

	for _, withMetrics := range []bool{true, false} {
		name := "metrics=off"
		if withMetrics {
			name = "metrics=on"
		}
		b.Run(name, func(b *testing.B) {
			log := zap.NewNop() // info level: the access log is debug and never built
			tr, err := proxy.NewTransport(proxy.TransportOptions{ResponseHeaderTimeout: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			// b.Run calls this function several times per sub-benchmark: close what each
			// call opened, or idle connections pile up, the heap grows from run to run
			// and whichever variant runs later looks faster.
			defer tr.CloseIdleConnections()
			opts := proxy.Options{
				Upstream:      target,
				Tokens:        staticTokens{jwt: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"},
				Role:          "user",
				AllowedRoles:  []string{"user"},
				AllowedHosts:  []string{"127.0.0.1"},
				MaxBodyBytes:  1 << 20,
				Transport:     tr,
				Logger:        log,
				OnRequestDone: accessLog(log),
			}
			var m *metrics.Metrics
			if withMetrics {
				m = metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
				opts.OnRetry, opts.OnWebSocket = m.ObserveRetry, m.AddWebSocket
			}
			h, err := proxy.New(opts)
			if err != nil {
				b.Fatal(err)
			}
			var handler http.Handler = &inflight{next: h}
			if withMetrics {
				handler = m.Middleware(handler)
			}
			front := httptest.NewServer(handler)
			defer front.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPost, front.URL+"/v1/graphql", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

// TestAccessLogHook: below debug level the access-log hook is nil, so the proxy does no
// per-request work for it (the premise of BenchmarkHandlerChain's info-level chain); at
// debug it logs one line per request, without the query string.
func TestAccessLogHook(t *testing.T) {
	if hook := accessLog(zap.New(zapcore.NewNopCore())); hook != nil {
		t.Errorf("accessLog(no-op logger) = non-nil hook; want nil")
	}
	info, _ := observer.New(zapcore.InfoLevel)
	if hook := accessLog(zap.New(info)); hook != nil {
		t.Errorf("accessLog(info logger) = non-nil hook; want nil")
	}
	debug, logs := observer.New(zapcore.DebugLevel)
	hook := accessLog(zap.New(debug))
	if hook == nil {
		t.Fatal("accessLog(debug logger) = nil; want a hook")
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/graphql?secret=1", nil)
	hook(r, http.StatusOK, true, "user", time.Millisecond)
	entries := logs.FilterMessage("request").All()
	if len(entries) != 1 {
		t.Fatalf("debug access log lines = %d; want 1", len(entries))
	}
	got := entries[0].ContextMap()
	if got["path"] != "/v1/graphql" || got["status"] != int64(200) || got["role"] != "user" || got["retried"] != true {
		t.Errorf("access log fields = %v; want path /v1/graphql, status 200, role user, retried true", got)
	}
	for k, v := range got {
		if s, ok := v.(string); ok && strings.Contains(s, "secret") {
			t.Errorf("access log field %s = %q carries the query string", k, s)
		}
	}
}
