package dxtratest_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

const dcQuery = `{"query":"query { dataControllers { id title } }"}`

// accessToken signs in with a new PAT and returns the access token.
func accessToken(t *testing.T, s *dxtratest.Server) string {
	t.Helper()
	return mustSession(t, signIn(t, s, s.NewPAT()), true).AccessToken
}

// apiCall sends one request to the API with the given headers (each value added).
func apiCall(t *testing.T, s *dxtratest.Server, method, path, body string, headers [][2]string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.APIURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		req.Header.Add(h[0], h[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func gqErr(code, message string) string {
	return `{"errors":[{"extensions":{"path":"$","code":"` + code + `"},"message":"` + message + `"}]}`
}

func qErr(code, message string) string {
	return `{"path":"$","error":"` + message + `","code":"` + code + `"}`
}

func TestAPIAuthentication(t *testing.T) {
	const (
		expired      = `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"},"message":"Could not verify JWT: JWTExpired"}]}`
		badSignature = "Could not verify JWT: JWSError JWSInvalidSignature"
		missing      = "Missing 'Authorization' or 'Cookie' header in JWT authentication mode"
		malformed    = "Malformed Authorization header"
		dataBody     = `{"data":{"dataControllers":[{"id":1,"title":"Acme Analytics Ltd"},{"id":2,"title":"Globex Data Services"},{"id":3,"title":"Initech Processing GmbH"}]}}`
	)
	type setup struct {
		s   *dxtratest.Server
		clk *clock
		tok string
	}
	bearer := func(tok string) [2]string { return [2]string{"Authorization", "Bearer " + tok} }
	tests := []struct {
		name       string
		prepare    func(st *setup) // changes the server or clock before the call
		headers    func(st *setup) [][2]string
		wantStatus int
		wantBody   string
		wantValid  bool
		wantRole   string
	}{
		{name: "valid token, default role",
			headers:    func(st *setup) [][2]string { return [][2]string{bearer(st.tok)} },
			wantStatus: 200, wantBody: dataBody, wantValid: true, wantRole: "user"},
		{name: "valid token, allowed role",
			headers:    func(st *setup) [][2]string { return [][2]string{bearer(st.tok), {"x-hasura-role", "me"}} },
			wantStatus: 200, wantBody: dataBody, wantValid: true, wantRole: "me"},
		{name: "role not allowed",
			headers:    func(st *setup) [][2]string { return [][2]string{bearer(st.tok), {"X-Hasura-Role", "admin"}} },
			wantStatus: 200, wantBody: gqErr("access-denied", "Your requested role is not in allowed roles"), wantValid: true},
		{name: "no authorization",
			headers:    func(st *setup) [][2]string { return nil },
			wantStatus: 200, wantBody: gqErr("invalid-headers", missing)},
		{name: "lower-case bearer",
			headers:    func(st *setup) [][2]string { return [][2]string{{"Authorization", "bearer " + st.tok}} },
			wantStatus: 200, wantBody: gqErr("invalid-headers", malformed)},
		{name: "one word",
			headers:    func(st *setup) [][2]string { return [][2]string{{"Authorization", st.tok}} },
			wantStatus: 200, wantBody: gqErr("invalid-headers", malformed)},
		{name: "three words",
			headers:    func(st *setup) [][2]string { return [][2]string{{"Authorization", "Bearer " + st.tok + " x"}} },
			wantStatus: 200, wantBody: gqErr("invalid-headers", malformed)},
		{name: "extra spaces are fine",
			headers:    func(st *setup) [][2]string { return [][2]string{{"Authorization", "Bearer   " + st.tok}} },
			wantStatus: 200, wantBody: dataBody, wantValid: true, wantRole: "user"},
		{name: "two authorization headers",
			headers:    func(st *setup) [][2]string { return [][2]string{bearer(st.tok), bearer(st.tok)} },
			wantStatus: 200, wantBody: gqErr("invalid-headers", "Could not verify JWT: Multiple JWTs found")},
		{name: "garbage token",
			headers:    func(st *setup) [][2]string { return [][2]string{bearer("garbage")} },
			wantStatus: 200, wantBody: gqErr("invalid-jwt", "Could not verify JWT: JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got 1)")},
		{name: "tampered signature",
			headers: func(st *setup) [][2]string {
				return [][2]string{bearer(st.tok[:len(st.tok)-4] + "AAAA")}
			},
			wantStatus: 200, wantBody: gqErr("invalid-jwt", badSignature)},
		{name: "one second before exp",
			prepare:    func(st *setup) { st.clk.Add(59 * time.Second) },
			headers:    func(st *setup) [][2]string { return [][2]string{bearer(st.tok)} },
			wantStatus: 200, wantBody: dataBody, wantValid: true, wantRole: "user"},
		{name: "at exp, zero skew",
			prepare:    func(st *setup) { st.clk.Add(60 * time.Second) },
			headers:    func(st *setup) [][2]string { return [][2]string{bearer(st.tok)} },
			wantStatus: 200, wantBody: expired},
		{name: "revoked",
			prepare:    func(st *setup) { st.s.RevokeAccessToken(st.tok) },
			headers:    func(st *setup) [][2]string { return [][2]string{bearer(st.tok)} },
			wantStatus: 200, wantBody: gqErr("invalid-jwt", badSignature)},
		{name: "rotated key",
			prepare:    func(st *setup) { st.s.RotateSigningKey() },
			headers:    func(st *setup) [][2]string { return [][2]string{bearer(st.tok)} },
			wantStatus: 200, wantBody: gqErr("invalid-jwt", badSignature)},
		{name: "admin secret with a valid token",
			headers: func(st *setup) [][2]string {
				return [][2]string{bearer(st.tok), {"x-hasura-admin-secret", "s3cret"}}
			},
			wantStatus: 200, wantBody: gqErr("access-denied", "invalid x-hasura-admin-secret/x-hasura-access-key"), wantValid: true},
		{name: "access key without a token",
			headers:    func(st *setup) [][2]string { return [][2]string{{"X-Hasura-Access-Key", "k"}} },
			wantStatus: 200, wantBody: gqErr("access-denied", "invalid x-hasura-admin-secret/x-hasura-access-key")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			s := newServer(t, dxtratest.Options{Now: clk.Now, AccessTokenTTL: time.Minute})
			st := &setup{s: s, clk: clk, tok: accessToken(t, s)}
			if tc.prepare != nil {
				tc.prepare(st)
			}
			r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, tc.headers(st))
			if r.status != tc.wantStatus || string(r.body) != tc.wantBody {
				t.Errorf("POST /v1/graphql = %d %s\nwant %d %s", r.status, r.body, tc.wantStatus, tc.wantBody)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q; want application/json; charset=utf-8", ct)
			}
			reqs := s.Requests()
			if len(reqs) != 1 {
				t.Fatalf("len(Requests()) = %d; want 1", len(reqs))
			}
			if reqs[0].TokenValid != tc.wantValid || reqs[0].Role != tc.wantRole {
				t.Errorf("recorded TokenValid=%v Role=%q; want %v %q", reqs[0].TokenValid, reqs[0].Role, tc.wantValid, tc.wantRole)
			}
		})
	}
}

func TestAPIErrorShapesByPath(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		gateway  bool
		headers  func(tok string) [][2]string
		want     int
		wantBody string
	}{
		{name: "graphql missing", path: "/v1/graphql", headers: func(string) [][2]string { return nil },
			want: 200, wantBody: gqErr("invalid-headers", "Missing 'Authorization' or 'Cookie' header in JWT authentication mode")},
		{name: "relay bad token", path: "/v1beta1/relay", headers: func(string) [][2]string { return [][2]string{{"Authorization", "Bearer a.b.c"}} },
			want: 200, wantBody: gqErr("invalid-jwt", "Could not verify JWT: JWSError (CompactDecodeError Base64Error)")},
		{name: "v1alpha1 keeps 400", path: "/v1alpha1/graphql", headers: func(string) [][2]string { return nil },
			want: 400, wantBody: gqErr("invalid-headers", "Missing 'Authorization' or 'Cookie' header in JWT authentication mode")},
		{name: "test path 400 qerr", path: "/slow?delay=0s", headers: func(string) [][2]string { return nil },
			want: 400, wantBody: qErr("invalid-headers", "Missing 'Authorization' or 'Cookie' header in JWT authentication mode")},
		{name: "admin secret elsewhere is 401", path: "/v1/query", headers: func(string) [][2]string { return [][2]string{{"X-Hasura-Admin-Secret", "x"}} },
			want: 401, wantBody: qErr("access-denied", "invalid x-hasura-admin-secret/x-hasura-access-key")},
		{name: "gateway: graphql rejected token is 401", path: "/v1/graphql", gateway: true,
			headers: func(string) [][2]string { return [][2]string{{"Authorization", "Bearer x.y.z"}} },
			want:    401, wantBody: gqErr("invalid-jwt", "Could not verify JWT: JWSError (CompactDecodeError Base64Error)")},
		{name: "gateway: missing header is 401", path: "/stream", gateway: true, headers: func(string) [][2]string { return nil },
			want: 401, wantBody: qErr("invalid-headers", "Missing 'Authorization' or 'Cookie' header in JWT authentication mode")},
		{name: "gateway: access-denied stays 200", path: "/v1/graphql", gateway: true,
			headers: func(tok string) [][2]string {
				return [][2]string{{"Authorization", "Bearer " + tok}, {"X-Hasura-Role", "nope"}}
			},
			want: 200, wantBody: gqErr("access-denied", "Your requested role is not in allowed roles")},
		{name: "unknown path needs no auth", path: "/v2/nowhere", headers: func(string) [][2]string { return nil },
			want: 404, wantBody: qErr("not-found", "resource does not exist")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, dxtratest.Options{})
			s.SetGatewayMode(tc.gateway)
			r := apiCall(t, s, http.MethodPost, tc.path, dcQuery, tc.headers(accessToken(t, s)))
			if r.status != tc.want || string(r.body) != tc.wantBody {
				t.Errorf("POST %s = %d %s\nwant %d %s", tc.path, r.status, r.body, tc.want, tc.wantBody)
			}
		})
	}
}

func TestGatewayModeExpired(t *testing.T) {
	clk := newClock()
	s := newServer(t, dxtratest.Options{Now: clk.Now, AccessTokenTTL: 5 * time.Second})
	tok := accessToken(t, s)
	h := [][2]string{{"Authorization", "Bearer " + tok}}
	s.SetGatewayMode(true)
	if r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, h); r.status != 200 {
		t.Fatalf("valid token in gateway mode = %d; want 200", r.status)
	}
	clk.Add(5 * time.Second)
	if r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, h); r.status != 401 {
		t.Errorf("expired token in gateway mode = %d; want 401", r.status)
	}
	s.SetGatewayMode(false)
	if r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, h); r.status != 200 || !bytes.Contains(r.body, []byte("JWTExpired")) {
		t.Errorf("expired token, gateway off = %d %s; want 200 JWTExpired", r.status, r.body)
	}
}

func TestNewTokenAfterRevocationWorks(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	sess := mustSession(t, signIn(t, s, s.NewPAT()), true)
	s.RevokeAccessToken(sess.AccessToken)
	next := mustSession(t, refresh(t, s, sess.RefreshToken), false)
	r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, [][2]string{{"Authorization", "Bearer " + next.AccessToken}})
	if r.status != 200 || !bytes.HasPrefix(r.body, []byte(`{"data"`)) {
		t.Errorf("renewed token = %d %s; want data", r.status, r.body)
	}
	s.RotateSigningKey()
	after := mustSession(t, refresh(t, s, next.RefreshToken), false)
	r = apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, [][2]string{{"Authorization", "Bearer " + after.AccessToken}})
	if r.status != 200 || !bytes.HasPrefix(r.body, []byte(`{"data"`)) {
		t.Errorf("token signed with the rotated key = %d %s; want data", r.status, r.body)
	}
}

func TestGraphQLQueries(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		body     string
		wantBody string
	}{
		{"typename", http.MethodPost, `{"query":"{ __typename }"}`, `{"data":{"__typename":"query_root"}}`},
		{"unknown field", http.MethodPost, `{"query":"query Q { users { id } }","operationName":"Q"}`,
			`{"errors":[{"extensions":{"path":"$.selectionSet","code":"validation-failed"},"message":"field 'users' not found in type: 'query_root'"}]}`},
		{"not a query", http.MethodPost, `{"query":"hello"}`,
			`{"errors":[{"extensions":{"path":"$.selectionSet","code":"validation-failed"},"message":"not a valid graphql query"}]}`},
		{"no query key", http.MethodPost, `{"variables":{}}`, gqErr("parse-failed", `Error in $: key \"query\" not found`)},
		{"bad json", http.MethodPost, `{`, gqErr("invalid-json", "Error in $: unexpected end of JSON input")},
		{"get", http.MethodGet, ``, gqErr("bad-request", "PersistedQueryNotSupported")},
	}
	s := newServer(t, dxtratest.Options{})
	tok := accessToken(t, s)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := apiCall(t, s, tc.method, "/v1/graphql", tc.body, [][2]string{{"Authorization", "Bearer " + tok}})
			if r.status != 200 || string(r.body) != tc.wantBody {
				t.Errorf("%s /v1/graphql %s = %d %s\nwant 200 %s", tc.method, tc.body, r.status, r.body, tc.wantBody)
			}
		})
	}
}

func TestRequestsRecorded(t *testing.T) {
	s := newServer(t, dxtratest.Options{RecordLimit: 3})
	tok := accessToken(t, s)
	h := [][2]string{{"Authorization", "Bearer " + tok}, {"X-Custom", "a"}, {"X-Custom", "b"}}
	for i := range 5 {
		apiCall(t, s, http.MethodPost, fmt.Sprintf("/status?code=%d", 200+i), fmt.Sprintf("body-%d", i), h)
	}
	got := s.Requests()
	want := []dxtratest.Request{
		{Method: "POST", Path: "/status", RawQuery: "code=202", Body: []byte("body-2"), TokenValid: true, Role: "user"},
		{Method: "POST", Path: "/status", RawQuery: "code=203", Body: []byte("body-3"), TokenValid: true, Role: "user"},
		{Method: "POST", Path: "/status", RawQuery: "code=204", Body: []byte("body-4"), TokenValid: true, Role: "user"},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(dxtratest.Request{}, "Header")); diff != "" {
		t.Errorf("Requests() mismatch (-want +got):\n%s", diff)
	}
	for _, r := range got {
		if !cmp.Equal(r.Header.Values("X-Custom"), []string{"a", "b"}) || r.Header.Get("Authorization") != "Bearer "+tok {
			t.Errorf("recorded header = %v; want both X-Custom values and the Authorization", r.Header)
		}
	}
	s.ResetRequests()
	if got := s.Requests(); len(got) != 0 {
		t.Errorf("after ResetRequests, len(Requests()) = %d; want 0", len(got))
	}
	if got := s.Calls(dxtratest.GraphQL); got != 5 {
		t.Errorf("Calls(GraphQL) = %d; want 5", got)
	}
}

func TestAPIFailNextAndDown(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	h := [][2]string{{"Authorization", "Bearer " + accessToken(t, s)}}
	s.FailNext(dxtratest.GraphQL, 1, 502, "")
	if r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, h); r.status != 502 ||
		string(r.body) != qErr("unexpected", "injected failure: 502 Bad Gateway") {
		t.Errorf("failed call = %d %s; want 502 with a JSON error", r.status, r.body)
	}
	s.FailNext(dxtratest.GraphQL, 1, 429, "3")
	if r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, h); r.status != 429 || len(r.body) != 0 || r.header.Get("Retry-After") != "3" {
		t.Errorf("429 call = %d %q Retry-After %q; want 429, empty, 3", r.status, r.body, r.header.Get("Retry-After"))
	}
	if r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, h); r.status != 200 {
		t.Errorf("after failures = %d; want 200", r.status)
	}
	s.SetDown(dxtratest.GraphQL, true)
	if r := apiCall(t, s, http.MethodGet, "/status", "", h); r.status != 503 {
		t.Errorf("down = %d; want 503", r.status)
	}
	s.SetDown(dxtratest.GraphQL, false)
	if got := s.Calls(dxtratest.GraphQL); got != 4 {
		t.Errorf("Calls(GraphQL) = %d; want 4", got)
	}
	if got := s.Calls(dxtratest.SignInPAT); got != 1 {
		t.Errorf("Calls(SignInPAT) = %d; want 1", got)
	}
}

func TestTestPaths(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	h := [][2]string{{"Authorization", "Bearer " + accessToken(t, s)}}
	tests := []struct {
		name     string
		path     string
		want     int
		wantBody string
	}{
		{"slow", "/slow?delay=10ms", 200, `{"data":{"slow":"10ms"}}`},
		{"slow bad delay", "/slow?delay=soon", 400, qErr("bad-request", `invalid delay parameter: \"soon\"`)},
		{"stream", "/stream?chunks=3&interval=0s", 200, "chunk 0\nchunk 1\nchunk 2\n"},
		{"status 502", "/status?code=502", 502, "status 502\n"},
		{"status 204", "/status?code=204", 204, ""},
		{"status out of range", "/status?code=99", 400, qErr("bad-request", `invalid code parameter: \"99\"`)},
		{"large small", "/large?bytes=300", 200, string(dxtratest.LargeBody(300))},
		{"healthz", "/healthz", 200, "OK"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := apiCall(t, s, http.MethodGet, tc.path, "", h)
			if r.status != tc.want || string(r.body) != tc.wantBody {
				t.Errorf("GET %s = %d %q; want %d %q", tc.path, r.status, r.body, tc.want, tc.wantBody)
			}
		})
	}
}

func TestLargeIntegrity(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	tok := accessToken(t, s)
	for _, n := range []int{10 << 20, 1000003} {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/large?bytes=%d", s.APIURL, n), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != int64(n) || !bytes.Equal(b, dxtratest.LargeBody(n)) {
			t.Errorf("/large?bytes=%d: Content-Length %d, %d bytes, equal to LargeBody: %v", n, resp.ContentLength, len(b), bytes.Equal(b, dxtratest.LargeBody(n)))
		}
	}
}

func TestStreamFlushesEachChunk(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	tok := accessToken(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// With an hour between chunks, the first one can only arrive if it was flushed.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.APIURL+"/stream?chunks=2&interval=1h", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != -1 || !cmp.Equal(resp.TransferEncoding, []string{"chunked"}) {
		t.Errorf("Content-Length %d, Transfer-Encoding %v; want chunked", resp.ContentLength, resp.TransferEncoding)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "chunk 0\n" {
		t.Fatalf("first chunk = %q, %v; want \"chunk 0\\n\"", line, err)
	}
	cancel() // the server's wait ends with the request context; Close (cleanup) then returns
}

func TestSingleListenerOnFixedPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := newServer(t, dxtratest.Options{Addr: addr})
	if s.AuthURL != "http://"+addr || s.APIURL != s.AuthURL {
		t.Fatalf("AuthURL %q APIURL %q; want both http://%s", s.AuthURL, s.APIURL, addr)
	}
	tok := accessToken(t, s)
	if r := apiCall(t, s, http.MethodPost, "/v1/graphql", dcQuery, [][2]string{{"Authorization", "Bearer " + tok}}); r.status != 200 || !bytes.HasPrefix(r.body, []byte(`{"data"`)) {
		t.Errorf("API on the shared listener = %d %s; want data", r.status, r.body)
	}
}
