package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// End-to-end: the real handler in front of dxtratest's fake Hasura, with a token
// source that exchanges a PAT at dxtratest's fake auth over HTTP.

// patTokens is a TokenSource that exchanges a PAT at /signin/pat: once at start, and
// on Renew when the rejected token is still the current one (coalesced: concurrent
// Renew calls wait for the one exchange).
type patTokens struct {
	authBase  string
	pat       string
	client    *http.Client
	mu        sync.Mutex
	cur       string
	exchanges atomic.Int32
}

func newPATTokens(t *testing.T, s *dxtratest.Server) *patTokens {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p := &patTokens{authBase: s.AuthBaseURL(), pat: s.NewPAT(), client: &http.Client{Transport: tr}}
	jwt, err := p.exchange(context.Background())
	if err != nil {
		t.Fatalf("exchange PAT: %v", err)
	}
	p.cur = jwt
	return p
}

func (p *patTokens) exchange(ctx context.Context) (string, error) {
	p.exchanges.Add(1)
	body := `{"personalAccessToken":"` + p.pat + `"}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.authBase+"/signin/pat", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("signin/pat: status %d", resp.StatusCode)
	}
	var out struct {
		Session struct {
			AccessToken string `json:"accessToken"`
		} `json:"session"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Session.AccessToken == "" {
		return "", fmt.Errorf("signin/pat: bad body: %v", err)
	}
	return out.Session.AccessToken, nil
}

func (p *patTokens) current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

func (p *patTokens) Token(context.Context) (string, time.Time, error) {
	return p.current(), time.Now().Add(time.Hour), nil
}

func (p *patTokens) Renew(ctx context.Context, rejected string) (string, time.Time, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rejected != p.cur {
		return p.cur, time.Now().Add(time.Hour), nil
	}
	jwt, err := p.exchange(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	p.cur = jwt
	return jwt, time.Now().Add(time.Hour), nil
}

func (p *patTokens) Changed() <-chan struct{} { return make(chan struct{}) }

// testClock is a settable clock for dxtratest.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newDxtra(t *testing.T, opts dxtratest.Options) *dxtratest.Server {
	t.Helper()
	s := dxtratest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

func apiURL(t *testing.T, s *dxtratest.Server) *url.URL {
	t.Helper()
	u, err := url.Parse(s.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

const e2eQuery = `{"query":"query List { dataControllers { id title } }","variables":{"note":"ü ✓ \u0000"}}`

// wantData checks for the sample dataControllers answer.
func wantData(t *testing.T, resp *http.Response, b []byte) {
	t.Helper()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"dataControllers"`)) || bytes.Contains(b, []byte(`"errors"`)) {
		t.Fatalf("response = %d %s; want 200 with dataControllers", resp.StatusCode, b)
	}
}

// TestE2ERejectedTokenRenewedOnce: an expired token (Hasura's 200 invalid-jwt) and a
// revoked token behind a gateway (401) each cost one PAT exchange and one replay with
// the identical body, and the client sees only the data.
func TestE2ERejectedTokenRenewedOnce(t *testing.T) {
	tests := []struct {
		name    string
		gateway bool
		reject  func(s *dxtratest.Server, c *testClock, jwt string)
		reason  string
	}{
		{"expired, invalid-jwt", false, func(s *dxtratest.Server, c *testClock, _ string) { c.Add(2 * time.Minute) }, ReasonInvalidJWT},
		{"revoked, invalid-jwt", false, func(s *dxtratest.Server, _ *testClock, jwt string) { s.RevokeAccessToken(jwt) }, ReasonInvalidJWT},
		{"bad signature, invalid-jwt", false, func(s *dxtratest.Server, _ *testClock, _ string) { s.RotateSigningKey() }, ReasonInvalidJWT},
		{"expired, gateway 401", true, func(s *dxtratest.Server, c *testClock, _ string) { c.Add(2 * time.Minute) }, ReasonUnauthorized},
		{"revoked, gateway 401", true, func(s *dxtratest.Server, _ *testClock, jwt string) { s.RevokeAccessToken(jwt) }, ReasonUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &testClock{t: time.Now()}
			s := newDxtra(t, dxtratest.Options{AccessTokenTTL: time.Minute, Now: clock.Now})
			s.SetGatewayMode(tt.gateway)
			tokens := newPATTokens(t, s)
			stale := tokens.current()
			tt.reject(s, clock, stale)
			tp := newTestProxy(t, apiURL(t, s), tokens, Options{AllowedRoles: []string{"me"}})

			resp, b := tp.post(t, "/v1/graphql", e2eQuery, http.Header{"X-Hasura-Role": {"me"}})
			wantData(t, resp, b)
			if got := tokens.exchanges.Load(); got != 2 {
				t.Errorf("PAT exchanges = %d; want 2 (start + one renewal)", got)
			}
			if got := s.Calls(dxtratest.SignInPAT); got != 2 {
				t.Errorf("dxtratest /signin/pat calls = %d; want 2", got)
			}
			reqs := s.Requests()
			if len(reqs) != 2 {
				t.Fatalf("API requests = %d; want 2", len(reqs))
			}
			if reqs[0].TokenValid || !reqs[1].TokenValid {
				t.Errorf("TokenValid = %v, %v; want false then true", reqs[0].TokenValid, reqs[1].TokenValid)
			}
			for i, r := range reqs {
				if string(r.Body) != e2eQuery {
					t.Errorf("attempt %d body = %q; want %q", i+1, r.Body, e2eQuery)
				}
			}
			if want := "Bearer " + tokens.current(); !slices.Equal(reqs[1].Header["Authorization"], []string{want}) {
				t.Errorf("replay Authorization = %q; want the renewed token", reqs[1].Header["Authorization"])
			}
			if reqs[1].Role != "me" {
				t.Errorf("replay ran as %q; want me", reqs[1].Role)
			}
			if got := tp.retries(); !slices.Equal(got, []string{tt.reason}) {
				t.Errorf("OnRetry = %q; want [%q]", got, tt.reason)
			}
			if d := tp.nextDone(t); d != (doneRecord{200, true, "me"}) {
				t.Errorf("OnRequestDone = %+v; want {200 true me}", d)
			}
		})
	}
}

func TestE2EConcurrentRejectionsOneRenewal(t *testing.T) {
	const n = 50
	for _, gateway := range []bool{false, true} {
		t.Run(fmt.Sprintf("gateway=%v", gateway), func(t *testing.T) {
			s := newDxtra(t, dxtratest.Options{})
			s.SetGatewayMode(gateway)
			tokens := newPATTokens(t, s)
			s.RevokeAccessToken(tokens.current())
			tp := newTestProxy(t, apiURL(t, s), tokens, Options{})
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					body := fmt.Sprintf(`{"query":"{ dataControllers { id } }","variables":{"i":%d}}`, i)
					resp, err := tp.client.Post(tp.URL+"/v1/graphql", "application/json", strings.NewReader(body))
					if err != nil {
						errs <- err
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !bytes.Contains(b, []byte("dataControllers")) || bytes.Contains(b, []byte("errors")) {
						errs <- fmt.Errorf("request %d = %d %s", i, resp.StatusCode, b)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := s.Calls(dxtratest.SignInPAT); got != 2 {
				t.Errorf("/signin/pat calls = %d; want 2 (start + one renewal for %d rejections)", got, n)
			}
			for _, r := range s.Requests() {
				if r.TokenValid && !strings.Contains(string(r.Body), "dataControllers") {
					t.Errorf("a replay carried body %q", r.Body)
				}
			}
		})
	}
}

func TestE2EHeaderPolicy(t *testing.T) {
	s := newDxtra(t, dxtratest.Options{})
	tokens := newPATTokens(t, s)
	tp := newTestProxy(t, apiURL(t, s), tokens, Options{AllowedOrigins: []string{"http://localhost:5173"}})
	// With any of these reaching Hasura, the request would run as admin, break with
	// "Multiple JWTs found", or leak the caller's address.
	request := "POST /v1/graphql HTTP/1.1\r\nHost: localhost\r\n" +
		"Content-Type: application/json\r\n" +
		"Authorization: Bearer caller-token\r\nAuthorization: Bearer another\r\n" +
		"x-HASURA-admin-secret: guess\r\nX-Hasura-Access-Key: guess\r\nX-Hasura-User-Id: 1\r\n" +
		"Cookie: a=b\r\nX-Forwarded-For: 203.0.113.1\r\nForwarded: for=203.0.113.1\r\nX-Real-IP: 203.0.113.1\r\n" +
		"Origin: http://localhost:5173\r\n" +
		"Content-Length: " + strconv.Itoa(len(e2eQuery)) + "\r\nConnection: close\r\n\r\n" + e2eQuery
	resp, b := raw(t, tp.addr, request)
	wantData(t, resp, b)
	reqs := s.Requests()
	if len(reqs) != 1 {
		t.Fatalf("API requests = %d; want 1", len(reqs))
	}
	r := reqs[0]
	if !r.TokenValid || r.Role != "user" {
		t.Errorf("API saw TokenValid %v, role %q; want true, user", r.TokenValid, r.Role)
	}
	for name, vals := range r.Header {
		if forbiddenUpstream(name) && name != "Authorization" && name != "X-Hasura-Role" {
			t.Errorf("API got %s: %q", name, vals)
		}
	}
	if got := r.Header["Authorization"]; !slices.Equal(got, []string{"Bearer " + tokens.current()}) {
		t.Errorf("Authorization = %q; want exactly the proxy's", got)
	}
}

func TestE2EAccessDeniedNotRetried(t *testing.T) {
	s := newDxtra(t, dxtratest.Options{}) // the token allows me, user
	tokens := newPATTokens(t, s)
	tp := newTestProxy(t, apiURL(t, s), tokens, Options{AllowedRoles: []string{"editor"}})
	resp, b := tp.post(t, "/v1/graphql", e2eQuery, http.Header{"X-Hasura-Role": {"editor"}})
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"access-denied"`)) {
		t.Errorf("response = %d %s; want Hasura's 200 access-denied", resp.StatusCode, b)
	}
	if got := s.Calls(dxtratest.SignInPAT); got != 1 {
		t.Errorf("/signin/pat calls = %d; want 1 (no renewal)", got)
	}
	if got := len(s.Requests()); got != 1 {
		t.Errorf("API requests = %d; want 1 (no replay)", got)
	}
}

func TestE2EGuardsNeverReachAPI(t *testing.T) {
	s := newDxtra(t, dxtratest.Options{})
	tp := newTestProxy(t, apiURL(t, s), newPATTokens(t, s), Options{MaxBodyBytes: 64})
	apiHost := apiURL(t, s).Host
	big := strings.Repeat("x", 65)
	tests := []struct {
		name, request string
		status        int
	}{
		{"absolute form", "POST http://" + apiHost + "/v1/graphql HTTP/1.1\r\nHost: " + apiHost + "\r\nContent-Length: 2\r\n\r\n{}", 400},
		{"CONNECT", "CONNECT " + apiHost + " HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n", 400},
		{"dot segments", "GET /v1/%2E%2e/v1/metadata HTTP/1.1\r\nHost: localhost\r\n\r\n", 400},
		{"host", "GET /v1/graphql HTTP/1.1\r\nHost: attacker.example\r\n\r\n", 403},
		{"origin", "GET /v1/graphql HTTP/1.1\r\nHost: localhost\r\nOrigin: https://attacker.example\r\n\r\n", 403},
		{"role", "GET /v1/graphql HTTP/1.1\r\nHost: localhost\r\nX-Hasura-Role: admin\r\n\r\n", 403},
		{"body", "POST /v1/graphql HTTP/1.1\r\nHost: localhost\r\nContent-Length: 65\r\n\r\n" + big, 413},
		{"chunked body", "POST /v1/graphql HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n" + big + "\r\n0\r\n\r\n", 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := raw(t, tp.addr, tt.request)
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d (%s); want %d", resp.StatusCode, b, tt.status)
			}
			tp.nextDone(t)
		})
	}
	if got := len(s.Requests()); got != 0 {
		t.Errorf("API requests = %d; want 0", got)
	}
}

func TestE2EStreamingAndLarge(t *testing.T) {
	s := newDxtra(t, dxtratest.Options{})
	tp := newTestProxy(t, apiURL(t, s), newPATTokens(t, s), Options{})

	t.Run("first chunk before the upstream is done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tp.URL+"/stream?chunks=2&interval=1h", nil)
		got := make(chan string, 1)
		go func() {
			resp, err := tp.client.Do(req)
			if err != nil {
				got <- err.Error()
				return
			}
			defer resp.Body.Close()
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil {
				line = err.Error()
			}
			got <- line
		}()
		select {
		case line := <-got:
			if line != "chunk 0\n" {
				t.Errorf("first line = %q; want chunk 0", line)
			}
		case <-time.After(failAfter):
			cancel()
			<-got
			t.Fatal("the first chunk did not arrive while the upstream waited an hour for the second")
		}
	})
	t.Run("10 MB intact", func(t *testing.T) {
		const n = 10 << 20
		resp, err := tp.client.Get(tp.URL + "/large?bytes=" + strconv.Itoa(n))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		if c, err := io.Copy(h, resp.Body); err != nil || c != n {
			t.Fatalf("read %d bytes, %v; want %d", c, err, n)
		}
		if want := sha256.Sum256(dxtratest.LargeBody(n)); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("body hash differs from dxtratest.LargeBody")
		}
	})
	t.Run("status passes through", func(t *testing.T) {
		resp, b := tp.do(t, http.MethodGet, "/status?code=418", "", nil)
		if resp.StatusCode != 418 || string(b) != "status 418\n" {
			t.Errorf("response = %d %q; want 418 status 418", resp.StatusCode, b)
		}
	})
}

func TestE2ETimeout(t *testing.T) {
	s := newDxtra(t, dxtratest.Options{})
	tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	tp := newTestProxy(t, apiURL(t, s), newPATTokens(t, s), Options{Transport: tr})
	resp, b := tp.do(t, http.MethodGet, "/slow?delay=1h", "", http.Header{"Accept": {"application/graphql-response+json"}})
	wantGraphQLError(t, resp, b, http.StatusGatewayTimeout, CodeUpstreamTimeout)
	if ct := resp.Header.Get("Content-Type"); ct != graphQLResponseType {
		t.Errorf("Content-Type = %q; want %q", ct, graphQLResponseType)
	}
}

func TestE2ERenewalFails(t *testing.T) {
	s := newDxtra(t, dxtratest.Options{})
	tokens := newPATTokens(t, s)
	s.RevokeAccessToken(tokens.current())
	s.SetDown(dxtratest.SignInPAT, true)
	tp := newTestProxy(t, apiURL(t, s), tokens, Options{})
	resp, b := tp.post(t, "/v1/graphql", e2eQuery, nil)
	wantGraphQLError(t, resp, b, http.StatusServiceUnavailable, CodeTokenUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
}
