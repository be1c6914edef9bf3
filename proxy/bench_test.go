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

// cannedTransport answers every request from memory, as an upstream would, after
// reading the request body: it takes the network out of the handler benchmarks below,
// so that they show what the handler itself costs.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{
		StatusCode:    http.StatusOK,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json; charset=utf-8"}},
		ContentLength: int64(len(bodyData)),
		Body:          io.NopCloser(strings.NewReader(bodyData)),
		Request:       req,
	}, nil
}

// discardResponse is a ResponseWriter that records the status and drops the rest.
type discardResponse struct {
	h      http.Header
	status int
}

func (d *discardResponse) Header() http.Header { return d.h }

func (d *discardResponse) WriteHeader(code int) {
	if d.status == 0 {
		d.status = code
	}
}

func (d *discardResponse) Write(p []byte) (int, error) {
	d.WriteHeader(http.StatusOK)
	return len(p), nil
}

// runHandlerBench serves the same small GraphQL POST to front over and over, without
// sockets; each request is built as net/http's server would hand it over.
func runHandlerBench(b *testing.B, front http.Handler) {
	template := httptest.NewRequest(http.MethodPost, "/v1/graphql", nil)
	template.Host = "localhost:8080"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardResponse{h: http.Header{}}
		body := strings.NewReader(benchQuery)
		for pb.Next() {
			body.Reset(benchQuery)
			req := new(http.Request)
			*req = *template
			req.Header = http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}
			req.Body, req.ContentLength = io.NopCloser(body), int64(len(benchQuery))
			clear(w.h)
			w.status = 0
			front.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Errorf("status %d", w.status)
				return
			}
		}
	})
}

// BenchmarkProxyHandler: the Handler alone (guards, header policy, body buffer, token
// stamp, sniffer) over a transport answering from memory.
func BenchmarkProxyHandler(b *testing.B) {
	h, err := New(Options{
		Upstream:      &url.URL{Scheme: "http", Host: "127.0.0.1:1"},
		Tokens:        staticTokens{benchJWT},
		Role:          "user",
		Transport:     cannedTransport{},
		OnRequestDone: func(*http.Request, int, bool, string, time.Duration) {},
	})
	if err != nil {
		b.Fatal(err)
	}
	runHandlerBench(b, h)
}

// BenchmarkReverseProxyBaselineHandler: a plain httputil.ReverseProxy stamping the same
// two headers (from shared slices, as a tuned one would) over the same transport.
func BenchmarkReverseProxyBaselineHandler(b *testing.B) {
	target := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	auth, role := []string{"Bearer " + benchJWT}, []string{"user"}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header["Authorization"] = auth
			pr.Out.Header["X-Hasura-Role"] = role
		},
		Transport:  cannedTransport{},
		BufferPool: copyBufferPool{},
	}
	runHandlerBench(b, rp)
}
