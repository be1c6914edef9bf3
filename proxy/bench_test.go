package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"
)

// staticTokens serves one token forever, as the cache does between renewals.
type staticTokens struct{ jwt string }

func (s staticTokens) Token(context.Context) (string, time.Time, error) {
	return s.jwt, time.Now().Add(time.Hour), nil
}

func (s staticTokens) Renew(context.Context, string) (string, time.Time, error) {
	return s.jwt, time.Now().Add(time.Hour), nil
}

func (s staticTokens) Changed() <-chan struct{} { return nil }

// benchJWT is about the size of a Hasura Auth access token.
var benchJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + strings.Repeat("eyJleHAiOjE3", 40) + ".c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2ln"

const benchQuery = `{"query":"query { dataControllers { id title } }"}`

// benchUpstream answers like Hasura for a small query: a short JSON body with a length.
func benchUpstream(b *testing.B) *url.URL {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		io.WriteString(w, bodyData)
	}))
	b.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

func benchTransport(b *testing.B) *http.Transport {
	b.Helper()
	tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(tr.CloseIdleConnections)
	return tr
}

// runBench posts benchQuery to front in parallel with one client shared by all.
func runBench(b *testing.B, front http.Handler) {
	srv := httptest.NewServer(front)
	b.Cleanup(srv.Close)
	ct := &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true}
	b.Cleanup(ct.CloseIdleConnections)
	client := &http.Client{Transport: ct}
	target := srv.URL + "/v1/graphql"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(benchQuery))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkProxy: a small GraphQL POST through the Handler (guards, header policy,
// body buffer, token stamp, sniffer) to a loopback upstream.
func BenchmarkProxy(b *testing.B) {
	up := benchUpstream(b)
	h, err := New(Options{
		Upstream:      up,
		Tokens:        staticTokens{benchJWT},
		Role:          "user",
		AllowedRoles:  []string{"me"},
		Transport:     benchTransport(b),
		OnRequestDone: func(*http.Request, int, bool, string, time.Duration) {},
	})
	if err != nil {
		b.Fatal(err)
	}
	runBench(b, h)
}

// BenchmarkReverseProxyBaseline: the same request through a plain, equally tuned
// httputil.ReverseProxy that only stamps the same two headers.
func BenchmarkReverseProxyBaseline(b *testing.B) {
	up := benchUpstream(b)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.Out.Header.Set("Authorization", "Bearer "+benchJWT)
			pr.Out.Header.Set("X-Hasura-Role", "user")
		},
		Transport:  benchTransport(b),
		BufferPool: copyBufferPool{},
	}
	runBench(b, rp)
}
