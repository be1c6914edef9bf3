package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// secretRecorder sits between the proxy and the fake auth service and keeps
// every access and refresh token the auth service hands out, so the test
// knows exactly which strings must never appear anywhere.
type secretRecorder struct {
	mu      sync.Mutex
	secrets map[string]string // value → kind
}

var sessionTokenRE = regexp.MustCompile(`"(accessToken|refreshToken)":"([^"]+)"`)

func (r *secretRecorder) add(kind, v string) {
	if v == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets[v] = kind
}

func (r *secretRecorder) all() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(r.secrets))
	for k, v := range r.secrets {
		out[k] = v
	}
	return out
}

func newSecretRecorder(t *testing.T, authURL string) (*secretRecorder, *httptest.Server) {
	rec := &secretRecorder{secrets: map[string]string{}}
	target, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error {
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			resp.Body.Close()
			for _, m := range sessionTokenRE.FindAllSubmatch(b, -1) {
				rec.add(string(m[1]), string(m[2]))
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return rec, srv
}

// TestSecretsNeverLeak drives a real proxy through renewals, a rejected-token
// retry, transient and refusal failures, error responses and shutdown, all at
// debug log level, and then looks for the PAT and every access and refresh
// token issued in everything the process and its endpoints produced.
func TestSecretsNeverLeak(t *testing.T) {
	fake := newFake(t, dxtratest.Options{AccessTokenTTL: 3 * time.Second})
	rec, auth := newSecretRecorder(t, fake.AuthURL)
	pat := fake.NewPAT()
	rec.add("pat", pat)

	p := startBinary(t, map[string]string{
		"DXTRA_PAT":       pat,
		"DXTRA_AUTH_URL":  auth.URL,
		"DXTRA_API_URL":   fake.APIURL,
		"DXTRA_LOG_LEVEL": "debug",
	})
	waitReady(t, p)
	var outputs []string // every body a client or scraper saw
	post := func(hdr map[string]string) (int, string) {
		status, body := do(t, http.DefaultClient, "POST", "http://"+p.Listen+"/v1/graphql", graphqlQuery, hdr)
		outputs = append(outputs, body)
		return status, body
	}
	if status, body := post(nil); status != 200 {
		t.Fatalf("first request: %d %s", status, body)
	}

	// Renewals through /token (tokens live 3 s, so one every 1.5 s).
	eventually(t, 10*time.Second, "two refresh-token renewals", func() bool {
		return fake.Calls(dxtratest.TokenRefresh) >= 2
	})

	// The API rejects the current token: one renewal, one replay.
	reqs := fake.Requests()
	current := strings.TrimPrefix(reqs[len(reqs)-1].Header.Get("Authorization"), "Bearer ")
	fake.RevokeAccessToken(current)
	if status, body := post(nil); status != 200 {
		t.Fatalf("request after revocation: %d %s", status, body)
	}

	// A transient failure, then a refused refresh token (PAT fallback).
	signIns := fake.Calls(dxtratest.SignInPAT)
	fake.FailNext(dxtratest.TokenRefresh, 1, 500, "")
	fake.FailNext(dxtratest.TokenRefresh, 1, 401, "")
	eventually(t, 15*time.Second, "a PAT exchange after /token was refused", func() bool {
		return fake.Calls(dxtratest.SignInPAT) > signIns
	})

	// Error responses made by the proxy itself.
	if status, _ := post(map[string]string{"X-Hasura-Role": "admin"}); status != 403 {
		t.Errorf("disallowed role: status %d; want 403", status)
	}
	if status, _ := post(map[string]string{"Authorization": "Bearer " + current, "Cookie": "s=" + pat}); status != 200 {
		t.Errorf("request with spoofed credentials: status %d; want 200", status)
	}
	for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
		_, body := do(t, http.DefaultClient, "GET", "http://"+p.Admin+path, "", nil)
		outputs = append(outputs, body)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}

	// Tokens the API saw are secrets too (they came from the recorder's
	// sessions, but collect them independently).
	for _, r := range fake.Requests() {
		rec.add("accessToken", strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	}
	secrets := rec.all()
	kinds := map[string]int{}
	for _, k := range secrets {
		kinds[k]++
	}
	if kinds["accessToken"] < 4 || kinds["refreshToken"] < 4 {
		t.Fatalf("only %v secrets were issued; the scenario did not drive enough renewals to mean anything", kinds)
	}
	everything := strings.Join(append(outputs, p.Stdout.String(), p.Stderr.String()), "\n")
	for v, kind := range secrets {
		if strings.Contains(everything, v) {
			t.Errorf("a %s appears in the output", kind)
		}
	}
	// Fingerprints are what the log shows instead.
	if !strings.Contains(p.Stderr.String(), `"token":"sha256:`) {
		t.Errorf("the log shows no token fingerprints; want sha256:… on renewals")
	}
	t.Logf("checked %d secrets (%v) against %d bytes of output", len(secrets), kinds, len(everything))
}
