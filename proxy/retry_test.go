package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// graphQLBody returns a request body of about n bytes with varied content, so that a
// replay that lost or reordered bytes is noticed.
func graphQLBody(n int) string {
	var b strings.Builder
	b.WriteString(`{"query":"query Q($v: String) { dataControllers { id title } }","variables":{"v":"`)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%d-ü-", i)
	}
	b.WriteString(`"}}`)
	return b.String()
}

func TestRetryOnRejectedToken(t *testing.T) {
	tests := []struct {
		name    string
		gateway bool
		reason  string
	}{
		{"200 invalid-jwt", false, ReasonInvalidJWT},
		{"401 from a gateway", true, ReasonUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthority()
			tokens := newFakeTokens(a)
			stale := tokens.current()
			a.revoke(stale)
			up := newUpstream(t, hasuraHandler(a, tt.gateway))
			tp := newTestProxy(t, up.URL, tokens, Options{AllowedRoles: []string{"me"}})

			body := graphQLBody(20 << 10)
			resp, b := tp.post(t, "/v1/graphql?x=1", body, http.Header{"X-Hasura-Role": {"me"}})
			if resp.StatusCode != 200 || string(b) != bodyData {
				t.Fatalf("response = %d %s; want 200 %s", resp.StatusCode, b, bodyData)
			}
			if n := tokens.renews.Load(); n != 1 {
				t.Errorf("Renew calls = %d; want 1", n)
			}
			reqs := up.requests()
			if len(reqs) != 2 {
				t.Fatalf("upstream saw %d requests; want 2", len(reqs))
			}
			fresh := tokens.current()
			for i, wantTok := range []string{stale, fresh} {
				r := reqs[i]
				if !bytes.Equal(r.Body, []byte(body)) {
					t.Errorf("attempt %d body differs from the client's (%d vs %d bytes)", i+1, len(r.Body), len(body))
				}
				if got := r.Header["Authorization"]; !slices.Equal(got, []string{"Bearer " + wantTok}) {
					t.Errorf("attempt %d Authorization = %q; want Bearer %s", i+1, got, wantTok)
				}
				if got := r.Header["X-Hasura-Role"]; !slices.Equal(got, []string{"me"}) {
					t.Errorf("attempt %d X-Hasura-Role = %q; want [me]", i+1, got)
				}
				if r.RawQuery != "x=1" {
					t.Errorf("attempt %d query = %q; want x=1", i+1, r.RawQuery)
				}
			}
			if got := tp.retries(); !slices.Equal(got, []string{tt.reason}) {
				t.Errorf("OnRetry reasons = %q; want [%q]", got, tt.reason)
			}
			if d := tp.nextDone(t); d != (doneRecord{200, true, "me"}) {
				t.Errorf("OnRequestDone = %+v; want {200 true me}", d)
			}
		})
	}
}

func TestRetryCoalesced(t *testing.T) {
	const n = 50
	for _, gateway := range []bool{false, true} {
		t.Run(fmt.Sprintf("gateway=%v", gateway), func(t *testing.T) {
			a := newAuthority()
			tokens := newFakeTokens(a)
			a.revoke(tokens.current())
			up := newUpstream(t, hasuraHandler(a, gateway))
			tp := newTestProxy(t, up.URL, tokens, Options{})

			var wg sync.WaitGroup
			errs := make(chan error, n)
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					body := fmt.Sprintf(`{"query":"{ q%d }"}`, i)
					resp, err := tp.client.Post(tp.URL+"/v1/graphql", "application/json", strings.NewReader(body))
					if err != nil {
						errs <- err
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(b) != bodyData {
						errs <- fmt.Errorf("request %d = %d %s", i, resp.StatusCode, b)
					}
				})
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := tokens.exchanges.Load(); got != 1 {
				t.Errorf("renewals performed = %d; want 1 for %d rejected requests", got, n)
			}
			// Each rejected request was replayed once with its own body.
			rejected := int(tokens.renews.Load())
			if got := len(up.requests()); got != n+rejected {
				t.Errorf("upstream requests = %d; want %d (%d first tries + %d replays)", got, n+rejected, n, rejected)
			}
			for _, r := range up.requests() {
				if !bytes.HasPrefix(r.Body, []byte(`{"query":"{ q`)) {
					t.Errorf("upstream body %q is not a client's", r.Body)
				}
			}
		})
	}
}

func TestRenewThrottledPassesRejectionThrough(t *testing.T) {
	tests := []struct {
		name       string
		gateway    bool
		wantStatus int
		wantBody   string
	}{
		{"invalid-jwt", false, 200, bodyInvalidJWT},
		{"401", true, 401, `{"message":"Unauthorized"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthority()
			tokens := newFakeTokens(a)
			a.revoke(tokens.current())
			tokens.throttle = true
			up := newUpstream(t, hasuraHandler(a, tt.gateway))
			tp := newTestProxy(t, up.URL, tokens, Options{})
			resp, b := tp.post(t, "/v1/graphql", `{"query":"{ a }"}`, nil)
			if resp.StatusCode != tt.wantStatus || string(b) != tt.wantBody {
				t.Errorf("response = %d %s; want the upstream's %d %s", resp.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
			if tt.gateway && resp.Header.Get("Www-Authenticate") == "" {
				t.Errorf("Www-Authenticate of the 401 lost")
			}
			if got := up.hits.Load(); got != 1 {
				t.Errorf("upstream hits = %d; want 1 (no replay)", got)
			}
			if got := tokens.renews.Load(); got != 1 {
				t.Errorf("Renew calls = %d; want 1", got)
			}
			if got := tp.retries(); got != nil {
				t.Errorf("OnRetry = %q; want none", got)
			}
			if d := tp.nextDone(t); d.retried {
				t.Errorf("OnRequestDone retried = true; want false")
			}
		})
	}
}

func TestRetriedRequestRejectedAgain(t *testing.T) {
	a := newAuthority()
	a.rejectAll = true // e.g. a wrong JWT secret on the upstream's side
	tokens := newFakeTokens(a)
	var mu sync.Mutex
	attempt := 0
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		attempt++
		n := attempt
		mu.Unlock()
		fmt.Fprintf(w, `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"},"message":"attempt %d"}]}`, n)
	})
	tp := newTestProxy(t, up.URL, tokens, Options{})
	resp, b := tp.post(t, "/v1/graphql", `{}`, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "attempt 2") {
		t.Errorf("response = %d %s; want the second rejection as is", resp.StatusCode, b)
	}
	if got := up.hits.Load(); got != 2 {
		t.Errorf("upstream hits = %d; want 2 (one replay, no loop)", got)
	}
	if got := tokens.renews.Load(); got != 1 {
		t.Errorf("Renew calls = %d; want 1", got)
	}
}

func TestRenewFailure(t *testing.T) {
	a := newAuthority()
	tokens := newFakeTokens(a)
	a.revoke(tokens.current())
	tokens.renewErr = errors.New("auth service down")
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, tokens, Options{})
	resp, b := tp.post(t, "/v1/graphql", `{}`, http.Header{"Accept": {graphQLResponseType}})
	wantGraphQLError(t, resp, b, http.StatusServiceUnavailable, CodeTokenUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	if ct := resp.Header.Get("Content-Type"); ct != graphQLResponseType {
		t.Errorf("Content-Type = %q; want %q", ct, graphQLResponseType)
	}
}

// TestNotRetried: answers that are not a rejected token pass through untouched, with no
// renewal.
func TestNotRetried(t *testing.T) {
	big := `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"},"message":"` + strings.Repeat("x", sniffCap) + `"}]}`
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
	}{
		{"access-denied", 200, nil, bodyAccessDenied},
		{"two errors", 200, nil, `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"},"message":"a"},{"extensions":{"path":"$","code":"invalid-jwt"},"message":"b"}]}`},
		{"not at $", 200, nil, `{"errors":[{"extensions":{"path":"$.selectionSet","code":"invalid-jwt"},"message":"a"}]}`},
		{"invalid-headers", 200, nil, `{"errors":[{"extensions":{"path":"$","code":"invalid-headers"},"message":"Missing Authorization header in JWT authentication mode"}]}`},
		{"compressed", 200, http.Header{"Content-Encoding": {"gzip"}}, bodyInvalidJWT},
		{"status 500", 500, nil, bodyInvalidJWT},
		{"status 403", 403, nil, bodyInvalidJWT},
		{"over the sniff cap", 200, nil, big},
		{"whitespace variant", 200, nil, `{ "errors":[{"extensions":{"path":"$","code":"invalid-jwt"},"message":"a"}]}`},
		{"data", 200, nil, bodyData},
		{"empty", 200, nil, ""},
		{"truncated envelope", 200, nil, `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthority()
			tokens := newFakeTokens(a)
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header()[k] = v
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			tp := newTestProxy(t, up.URL, tokens, Options{})
			resp, b := tp.post(t, "/v1/graphql", `{}`, nil)
			if resp.StatusCode != tt.status || string(b) != tt.body {
				t.Errorf("response = %d %q; want %d %q", resp.StatusCode, b, tt.status, tt.body)
			}
			if got := tokens.renews.Load(); got != 0 {
				t.Errorf("Renew calls = %d; want 0", got)
			}
			if got := up.hits.Load(); got != 1 {
				t.Errorf("upstream hits = %d; want 1", got)
			}
		})
	}
}

func TestRetriedOn400InvalidJWT(t *testing.T) {
	a := newAuthority()
	tokens := newFakeTokens(a)
	stale := tokens.current()
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+stale {
			w.WriteHeader(400) // Hasura's /v1alpha1/graphql
			io.WriteString(w, bodyInvalidJWT)
			return
		}
		io.WriteString(w, bodyData)
	})
	tp := newTestProxy(t, up.URL, tokens, Options{})
	resp, b := tp.post(t, "/v1alpha1/graphql", `{}`, nil)
	if resp.StatusCode != 200 || string(b) != bodyData {
		t.Errorf("response = %d %s; want the replay's 200 data", resp.StatusCode, b)
	}
	if got := tokens.renews.Load(); got != 1 {
		t.Errorf("Renew calls = %d; want 1", got)
	}
}

func TestPrefixVerdict(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", verdictUndecided},
		{"{", verdictUndecided},
		{`{"err`, verdictUndecided},
		{`{"errors`, verdictUndecided},
		{`{"errors"`, verdictMatches},
		{`{"errors":[`, verdictMatches},
		{`{"data"`, verdictDeparts},
		{`{"d`, verdictDeparts},
		{"[", verdictDeparts},
		{` {"errors"`, verdictDeparts},
		{`{"Errors"`, verdictDeparts},
		{"\x1f\x8b", verdictDeparts},
	}
	for _, tt := range tests {
		if got := prefixVerdict([]byte(tt.in)); got != tt.want {
			t.Errorf("prefixVerdict(%q) = %d; want %d", tt.in, got, tt.want)
		}
	}
}

func TestIsInvalidJWT(t *testing.T) {
	tests := []struct {
		name string
		body string
		want bool
	}{
		{"expired", bodyInvalidJWT, true},
		{"bad signature", `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"},"message":"Could not verify JWT: JWSError JWSInvalidSignature"}]}`, true},
		{"keys reordered", `{"errors":[{"message":"x","extensions":{"code":"invalid-jwt","path":"$"}}]}`, true},
		{"trailing newline", bodyInvalidJWT + "\n", true},
		{"access-denied", bodyAccessDenied, false},
		{"two errors", `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"}},{"extensions":{"path":"$","code":"invalid-jwt"}}]}`, false},
		{"no errors", `{"errors":[]}`, false},
		{"path elsewhere", `{"errors":[{"extensions":{"path":"$.x","code":"invalid-jwt"}}]}`, false},
		{"non-graphql shape", `{"path":"$","error":"Could not verify JWT: JWTExpired","code":"invalid-jwt"}`, false},
		{"errors not a list", `{"errors":{"extensions":{"path":"$","code":"invalid-jwt"}}}`, false},
		{"truncated", bodyInvalidJWT[:40], false},
		{"trailing garbage", bodyInvalidJWT + "x", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isInvalidJWT([]byte(tt.body)); got != tt.want {
				t.Errorf("isInvalidJWT(%q) = %v; want %v", tt.body, got, tt.want)
			}
		})
	}
}

// blockingReader returns first, then blocks until unblock is closed.
type blockingReader struct {
	first   []byte
	unblock chan struct{}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if len(r.first) > 0 {
		n := copy(p, r.first)
		r.first = r.first[n:]
		return n, nil
	}
	<-r.unblock
	return 0, io.EOF
}

func (r *blockingReader) Close() error { return nil }

// TestSniffDecidesAtFirstDepartingByte: a stream whose first flush departs from
// {"errors" is decided on that flush, without waiting for more.
func TestSniffDecidesAtFirstDepartingByte(t *testing.T) {
	for _, first := range []string{`{"data":{"n":1}}` + "\n", "data: x\n\n", `{"e` + "x", "["} {
		t.Run(first, func(t *testing.T) {
			br := &blockingReader{first: []byte(first), unblock: make(chan struct{})}
			defer close(br.unblock)
			var s sniffBody
			s.reset(br)
			done := make(chan bool, 1)
			go func() { done <- s.sniff() }()
			select {
			case got := <-done:
				if got {
					t.Errorf("sniff() = true; want false")
				}
			case <-time.After(failAfter):
				t.Fatal("sniff() waited for more than the first departing read")
			}
			p := make([]byte, 64)
			n, _ := s.Read(p)
			if string(p[:n]) != first {
				t.Errorf("first Read = %q; want %q", p[:n], first)
			}
		})
	}
}

// TestSniffPassThrough: whatever the sniffer read is returned, in order, followed by
// the rest of the body, for every way the body may be split into reads.
func TestSniffPassThrough(t *testing.T) {
	bodies := []string{bodyData, bodyInvalidJWT, bodyAccessDenied, `{"errors"`, "", strings.Repeat(`{"errors":`, 1000)}
	for _, body := range bodies {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(body)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			var s sniffBody
			s.reset(io.NopCloser(r))
			verdict := s.sniff()
			if want := isInvalidJWT([]byte(body)); verdict != want {
				t.Errorf("sniff(%.40q, oneByte=%v) = %v; want %v", body, oneByte, verdict, want)
			}
			got, err := io.ReadAll(&s)
			if err != nil || string(got) != body {
				t.Errorf("read through sniffer (%.40q, oneByte=%v) = %.40q, %v; want the body", body, oneByte, got, err)
			}
			s.Close()
		}
	}
}
