package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wantGraphQLError checks that b is {"errors":[{"message":..,"extensions":{"code":code}}]}.
func wantGraphQLError(t *testing.T, resp *http.Response, b []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d; want %d (body %s)", resp.StatusCode, status, b)
	}
	var env struct {
		Errors []struct {
			Message    string `json:"message"`
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("body %q is not JSON: %v", b, err)
	}
	if len(env.Errors) != 1 || env.Errors[0].Message == "" || env.Errors[0].Extensions.Code != code {
		t.Errorf("body = %s; want one error with a message and code %q", b, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" && ct != graphQLResponseType {
		t.Errorf("Content-Type = %q; want a JSON type", ct)
	}
}

// forbiddenUpstream reports whether an upstream request header name is one the caller
// must never get through (SPEC 2), written independently of strippedHeader.
func forbiddenUpstream(name string) bool {
	n := strings.ReplaceAll(asciiLower(name), "_", "-")
	switch n {
	case "authorization", "cookie", "origin", "forwarded", "x-real-ip", "proxy-authorization", "x-hasura-role":
		return true
	}
	return strings.HasPrefix(n, "x-hasura-") || strings.HasPrefix(n, "x-forwarded-")
}

func TestHeaderPolicy(t *testing.T) {
	a := newAuthority()
	tokens := newFakeTokens(a)
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, tokens, Options{AllowedOrigins: []string{"http://app.example"}})

	body := `{"query":"{ dataControllers { id title } }"}`
	request := "POST /v1/graphql?op=list&x=%20y HTTP/1.1\r\n" +
		"Host: " + tp.addr + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Accept: application/json\r\n" +
		"X-Custom: keep-me\r\n" +
		"Authorization: Bearer spoofed-one\r\n" +
		"authorization: Bearer spoofed-two\r\n" +
		"Cookie: session=abc\r\n" +
		"cookie: nhostRefreshToken=def\r\n" +
		"x-HASURA-admin-secret: s3cret\r\n" +
		"X-Hasura-Admin-Secret: s3cret-again\r\n" +
		"X-Hasura-Access-Key: old-key\r\n" +
		"X-Hasura-User-Id: 42\r\n" +
		"X_Hasura_Admin_Secret: underscored\r\n" +
		"X-Forwarded-For: 203.0.113.7\r\n" +
		"x-forwarded-for: 203.0.113.8\r\n" +
		"X-Forwarded-Host: evil.example\r\n" +
		"X-Forwarded-Proto: https\r\n" +
		"X-Forwarded-Port: 443\r\n" +
		"X-Forwarded-Prefix: /x\r\n" +
		"Forwarded: for=203.0.113.7;proto=https\r\n" +
		"X-Real-IP: 203.0.113.9\r\n" +
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
		"Origin: http://app.example\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Connection: close\r\n\r\n" + body
	resp, b := raw(t, tp.addr, request)
	if resp.StatusCode != http.StatusOK || string(b) != bodyData {
		t.Fatalf("response = %d %s; want 200 %s", resp.StatusCode, b, bodyData)
	}
	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests; want 1", len(reqs))
	}
	got := reqs[0]
	if want := []string{"Bearer " + tokens.current()}; !slices.Equal(got.Header["Authorization"], want) {
		t.Errorf("Authorization = %q; want %q", got.Header["Authorization"], want)
	}
	if want := []string{"user"}; !slices.Equal(got.Header["X-Hasura-Role"], want) {
		t.Errorf("X-Hasura-Role = %q; want %q", got.Header["X-Hasura-Role"], want)
	}
	for name, vals := range got.Header {
		if forbiddenUpstream(name) && name != "Authorization" && name != "X-Hasura-Role" {
			t.Errorf("upstream got %s: %q; want it removed", name, vals)
		}
	}
	if got.Host != up.URL.Host {
		t.Errorf("upstream Host = %q; want %q", got.Host, up.URL.Host)
	}
	if got.Path != "/v1/graphql" || got.RawQuery != "op=list&x=%20y" {
		t.Errorf("upstream target = %s?%s; want /v1/graphql?op=list&x=%%20y", got.Path, got.RawQuery)
	}
	if got.Header.Get("X-Custom") != "keep-me" || got.Header.Get("Content-Type") != "application/json" {
		t.Errorf("upstream headers %v lost X-Custom or Content-Type", got.Header)
	}
	if string(got.Body) != body {
		t.Errorf("upstream body = %q; want %q", got.Body, body)
	}
	if d := tp.nextDone(t); d != (doneRecord{200, false, "user"}) {
		t.Errorf("OnRequestDone = %+v; want {200 false user}", d)
	}
}

func TestUpstreamBasePath(t *testing.T) {
	a := newAuthority()
	tokens := newFakeTokens(a)
	up := newUpstream(t, hasuraHandler(a, false))
	tests := []struct {
		name, base, target, wantPath, wantRawPath, wantQuery string
	}{
		{"no base", "", "/v1/graphql?a=1", "/v1/graphql", "", "a=1"},
		{"base", "/hasura", "/v1/graphql", "/hasura/v1/graphql", "", ""},
		{"base with slash", "/hasura/", "/v1/graphql?b=%2F", "/hasura/v1/graphql", "", "b=%2F"},
		{"escaped slash kept", "/hasura", "/v1/a%2Fb", "/hasura/v1/a/b", "/hasura/v1/a%2Fb", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := *up.URL
			u.Path = tt.base
			tp := newTestProxy(t, &u, tokens, Options{})
			before := len(up.requests())
			resp, b := raw(t, tp.addr, "GET "+tt.target+" HTTP/1.1\r\nHost: "+tp.addr+"\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d (%s); want 200", resp.StatusCode, b)
			}
			got := up.requests()[before]
			if got.Path != tt.wantPath || got.RawPath != tt.wantRawPath || got.RawQuery != tt.wantQuery {
				t.Errorf("upstream saw path %q raw %q query %q; want %q %q %q",
					got.Path, got.RawPath, got.RawQuery, tt.wantPath, tt.wantRawPath, tt.wantQuery)
			}
		})
	}
}

func TestRoleSelection(t *testing.T) {
	a := newAuthority()
	tokens := newFakeTokens(a)
	up := newUpstream(t, hasuraHandler(a, false, "user", "me", "editor"))
	tp := newTestProxy(t, up.URL, tokens, Options{Role: "user", AllowedRoles: []string{"me", "editor"}})
	tests := []struct {
		name     string
		roles    []string // X-Hasura-Role values sent; nil: none
		status   int
		code     string // error code when refused
		wantRole string
	}{
		{"none: DXTRA_ROLE", nil, 200, "", "user"},
		{"empty counts as none", []string{""}, 200, "", "user"},
		{"allowed choice", []string{"me"}, 200, "", "me"},
		{"another allowed choice", []string{"editor"}, 200, "", "editor"},
		{"DXTRA_ROLE named explicitly", []string{"user"}, 200, "", "user"},
		{"not allowed", []string{"admin"}, 403, CodeRoleNotAllowed, ""},
		{"case matters", []string{"User"}, 403, CodeRoleNotAllowed, ""},
		{"comma list is one value", []string{"me,user"}, 403, CodeRoleNotAllowed, ""},
		{"two headers", []string{"me", "me"}, 400, CodeBadRequest, ""},
		{"two headers, one empty", []string{"", "me"}, 400, CodeBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := up.hits.Load()
			before := len(up.requests())
			hdr := http.Header{}
			if tt.roles != nil {
				hdr["X-Hasura-Role"] = tt.roles
			}
			resp, b := tp.post(t, "/v1/graphql", `{"query":"{ a }"}`, hdr)
			d := tp.nextDone(t)
			if tt.status != 200 {
				wantGraphQLError(t, resp, b, tt.status, tt.code)
				if n := up.hits.Load() - hits; n != 0 {
					t.Errorf("upstream reached %d times; want 0", n)
				}
				if d.status != tt.status {
					t.Errorf("OnRequestDone status = %d; want %d", d.status, tt.status)
				}
				return
			}
			if resp.StatusCode != 200 || string(b) != bodyData {
				t.Fatalf("response = %d %s; want 200 data", resp.StatusCode, b)
			}
			got := up.requests()[before].Header["X-Hasura-Role"]
			if !slices.Equal(got, []string{tt.wantRole}) {
				t.Errorf("upstream X-Hasura-Role = %q; want [%q]", got, tt.wantRole)
			}
			if d.role != tt.wantRole {
				t.Errorf("OnRequestDone role = %q; want %q", d.role, tt.wantRole)
			}
		})
	}
}

func TestDXTRARoleAlwaysAllowed(t *testing.T) {
	a := newAuthority()
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{Role: "user", AllowedRoles: []string{"me"}})
	resp, b := tp.post(t, "/v1/graphql", `{}`, http.Header{"X-Hasura-Role": {"user"}})
	if resp.StatusCode != 200 {
		t.Errorf("X-Hasura-Role: user (DXTRA_ROLE, not in AllowedRoles) = %d %s; want 200", resp.StatusCode, b)
	}
}

func TestGuards(t *testing.T) {
	a := newAuthority()
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{AllowedOrigins: []string{"http://app.example", "HTTPS://Web.Example:443"}})
	port := tp.addr[strings.LastIndexByte(tp.addr, ':')+1:]
	tests := []struct {
		name   string
		line   string // request line
		host   string
		extra  string // extra header lines
		status int
		code   string
	}{
		{"plain", "POST /v1/graphql HTTP/1.1", tp.addr, "", 200, ""},
		{"absolute form", "POST http://" + up.URL.Host + "/v1/graphql HTTP/1.1", up.URL.Host, "", 400, CodeBadRequest},
		{"absolute form to self", "POST http://" + tp.addr + "/v1/graphql HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"CONNECT", "CONNECT " + up.URL.Host + " HTTP/1.1", up.URL.Host, "", 400, CodeBadRequest},
		{"asterisk form", "GET * HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"dot dot", "POST /v1/../graphql HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"dot", "POST /v1/./graphql HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"trailing dot dot", "POST /v1/.. HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"encoded dot dot", "POST /v1/%2e%2E/graphql HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"half encoded", "POST /v1/.%2e/graphql HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"encoded dot", "POST /v1/%2E/graphql HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"encoded slash dot dot", "POST /v1/..%2Fgraphql HTTP/1.1", tp.addr, "", 400, CodeBadRequest},
		{"backslash dot dot", `POST /v1/..\graphql HTTP/1.1`, tp.addr, "", 400, CodeBadRequest},
		{"dots in a name are fine", "POST /v1/graphql.json/...x/.well-known HTTP/1.1", tp.addr, "", 200, ""},
		{"host not allowed", "POST /v1/graphql HTTP/1.1", "evil.example:" + port, "", 403, CodeHostNotAllowed},
		{"host suffix trick", "POST /v1/graphql HTTP/1.1", "localhost.evil.example", "", 403, CodeHostNotAllowed},
		{"host prefix trick", "POST /v1/graphql HTTP/1.1", "127.0.0.1.nip.io", "", 403, CodeHostNotAllowed},
		{"localhost any case and port", "POST /v1/graphql HTTP/1.1", "LocalHost:9999", "", 200, ""},
		{"localhost trailing dot", "POST /v1/graphql HTTP/1.1", "localhost.", "", 200, ""},
		{"ipv6 loopback", "POST /v1/graphql HTTP/1.1", "[::1]:" + port, "", 200, ""},
		{"ipv6 other", "POST /v1/graphql HTTP/1.1", "[::2]:" + port, "", 403, CodeHostNotAllowed},
		{"origin not allowed", "POST /v1/graphql HTTP/1.1", tp.addr, "Origin: http://evil.example\r\n", 403, CodeOriginNotAllowed},
		{"origin null", "POST /v1/graphql HTTP/1.1", tp.addr, "Origin: null\r\n", 403, CodeOriginNotAllowed},
		{"origin empty", "POST /v1/graphql HTTP/1.1", tp.addr, "Origin: \r\n", 403, CodeOriginNotAllowed},
		{"origin with path", "POST /v1/graphql HTTP/1.1", tp.addr, "Origin: http://app.example/\r\n", 403, CodeOriginNotAllowed},
		{"origin other port", "POST /v1/graphql HTTP/1.1", tp.addr, "Origin: http://app.example:8080\r\n", 403, CodeOriginNotAllowed},
		{"two origins", "POST /v1/graphql HTTP/1.1", tp.addr, "Origin: http://app.example\r\nOrigin: http://app.example\r\n", 403, CodeOriginNotAllowed},
		{"origin allowed", "POST /v1/graphql HTTP/1.1", tp.addr, "Origin: http://app.example\r\n", 200, ""},
		{"normalised configured origin", "POST /v1/graphql HTTP/1.1", tp.addr, "Origin: https://web.example\r\n", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := up.hits.Load()
			body := `{"query":"{ a }"}`
			req := tt.line + "\r\nHost: " + tt.host + "\r\n" + tt.extra +
				"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) +
				"\r\nConnection: close\r\n\r\n" + body
			resp, b := raw(t, tp.addr, req)
			tp.nextDone(t)
			if tt.status != 200 {
				wantGraphQLError(t, resp, b, tt.status, tt.code)
				if n := up.hits.Load() - hits; n != 0 {
					t.Errorf("upstream reached %d times; want 0", n)
				}
				return
			}
			if resp.StatusCode != 200 || up.hits.Load()-hits != 1 {
				t.Errorf("status %d (%s), upstream hits %d; want 200 and 1", resp.StatusCode, b, up.hits.Load()-hits)
			}
		})
	}
}

func TestAllowedHostsWildcard(t *testing.T) {
	a := newAuthority()
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{AllowedHosts: []string{"proxy.svc", "*"}})
	resp, b := raw(t, tp.addr, "GET /v1/graphql HTTP/1.1\r\nHost: anything.example\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Errorf("status = %d (%s); want 200 with AllowedHosts *", resp.StatusCode, b)
	}
}

func TestCORS(t *testing.T) {
	a := newAuthority()
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		// An upstream with its own (permissive) CORS answer must not leak through.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		hasuraHandler(a, false)(w, r)
	})
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{AllowedOrigins: []string{"http://localhost:3000"}})
	const origin = "http://localhost:3000"

	t.Run("preflight", func(t *testing.T) {
		hits := up.hits.Load()
		resp, b := tp.do(t, http.MethodOptions, "/v1/graphql", "", http.Header{
			"Origin":                         {origin},
			"Access-Control-Request-Method":  {"POST"},
			"Access-Control-Request-Headers": {"content-type,x-hasura-role, apollo-require-preflight", "authorization, x-hasura-admin-secret,cookie,bad header"},
		})
		if resp.StatusCode != http.StatusNoContent || len(b) != 0 {
			t.Fatalf("preflight = %d %q; want 204 and no body", resp.StatusCode, b)
		}
		want := map[string]string{
			"Access-Control-Allow-Origin":  origin,
			"Access-Control-Allow-Methods": "GET, POST",
			"Access-Control-Allow-Headers": "Content-Type, X-Hasura-Role, apollo-require-preflight",
		}
		for k, v := range want {
			if got := resp.Header.Values(k); !slices.Equal(got, []string{v}) {
				t.Errorf("%s = %q; want [%q]", k, got, v)
			}
		}
		if vary := strings.Join(resp.Header.Values("Vary"), ","); !strings.Contains(vary, "Origin") {
			t.Errorf("Vary = %q; want it to list Origin", vary)
		}
		if n := up.hits.Load() - hits; n != 0 {
			t.Errorf("upstream reached %d times by a preflight; want 0", n)
		}
		tp.nextDone(t)
	})
	t.Run("actual request", func(t *testing.T) {
		before := len(up.requests())
		resp, b := tp.post(t, "/v1/graphql", `{}`, http.Header{"Origin": {origin}})
		if resp.StatusCode != 200 || string(b) != bodyData {
			t.Fatalf("response = %d %s; want 200 data", resp.StatusCode, b)
		}
		if got := resp.Header.Values("Access-Control-Allow-Origin"); !slices.Equal(got, []string{origin}) {
			t.Errorf("Access-Control-Allow-Origin = %q; want [%q]", got, origin)
		}
		if got := resp.Header.Values("Access-Control-Allow-Credentials"); got != nil {
			t.Errorf("Access-Control-Allow-Credentials = %q; want none", got)
		}
		if got := up.requests()[before].Header.Values("Origin"); got != nil {
			t.Errorf("upstream saw Origin %q; want none", got)
		}
		tp.nextDone(t)
	})
	t.Run("refusal readable by the page", func(t *testing.T) {
		resp, b := tp.post(t, "/v1/graphql", `{}`, http.Header{"Origin": {origin}, "X-Hasura-Role": {"admin"}})
		wantGraphQLError(t, resp, b, 403, CodeRoleNotAllowed)
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != origin {
			t.Errorf("Access-Control-Allow-Origin on a refusal = %q; want %q", got, origin)
		}
		tp.nextDone(t)
	})
	t.Run("OPTIONS without preflight headers is forwarded", func(t *testing.T) {
		hits := up.hits.Load()
		resp, _ := tp.do(t, http.MethodOptions, "/v1/graphql", "", nil)
		if resp.StatusCode != 200 || up.hits.Load()-hits != 1 {
			t.Errorf("OPTIONS = %d, upstream hits %d; want forwarded", resp.StatusCode, up.hits.Load()-hits)
		}
		tp.nextDone(t)
	})
}

func TestWebSocketUpgradeGuarded(t *testing.T) {
	a := newAuthority()
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{})
	upgrade := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	tests := []struct {
		name   string
		host   string
		extra  string
		status int
	}{
		{"host guard first", "evil.example", "", 403},
		{"origin guard first", tp.addr, "Origin: http://evil.example\r\n", 403},
		{"role guard first", tp.addr, "X-Hasura-Role: admin\r\n", 403},
		{"handed to the relay", tp.addr, "", http.StatusBadGateway}, // the relay dials; this upstream answers plain HTTP
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := raw(t, tp.addr, "GET /v1/graphql HTTP/1.1\r\nHost: "+tt.host+"\r\n"+upgrade+tt.extra+"\r\n")
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d (%s); want %d", resp.StatusCode, b, tt.status)
			}
			if up.hits.Load() != 0 && tt.status != http.StatusBadGateway {
				t.Errorf("upstream reached by an upgrade request")
			}
			tp.nextDone(t)
		})
	}
}

func TestNonWebSocketUpgradeForwardedPlain(t *testing.T) {
	a := newAuthority()
	up := newUpstream(t, hasuraHandler(a, false))
	tp := newTestProxy(t, up.URL, newFakeTokens(a), Options{})
	resp, b := raw(t, tp.addr, "GET /v1/graphql HTTP/1.1\r\nHost: "+tp.addr+"\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || string(b) != bodyData {
		t.Fatalf("response = %d %s; want 200 data", resp.StatusCode, b)
	}
	if got := up.requests()[0].Header.Get("Upgrade"); got != "" {
		t.Errorf("upstream saw Upgrade %q; want none", got)
	}
}

func TestNewOptionErrors(t *testing.T) {
	up, _ := url.Parse("http://127.0.0.1:1")
	ok := Options{Upstream: up, Tokens: newFakeTokens(newAuthority()), Role: "user"}
	tests := []struct {
		name string
		mod  func(o *Options)
	}{
		{"no upstream", func(o *Options) { o.Upstream = nil }},
		{"ftp upstream", func(o *Options) { o.Upstream = &url.URL{Scheme: "ftp", Host: "x"} }},
		{"hostless upstream", func(o *Options) { o.Upstream = &url.URL{Scheme: "https", Path: "/x"} }},
		{"user info", func(o *Options) { o.Upstream = &url.URL{Scheme: "https", Host: "x", User: url.User("u")} }},
		{"no tokens", func(o *Options) { o.Tokens = nil }},
		{"no role", func(o *Options) { o.Role = "" }},
		{"role with space", func(o *Options) { o.Role = "a b" }},
		{"empty allowed role", func(o *Options) { o.AllowedRoles = []string{""} }},
		{"bad origin", func(o *Options) { o.AllowedOrigins = []string{"app.example"} }},
		{"null origin", func(o *Options) { o.AllowedOrigins = []string{"null"} }},
		{"bad host", func(o *Options) { o.AllowedHosts = []string{"[::1"} }},
		{"negative body limit", func(o *Options) { o.MaxBodyBytes = -1 }},
		{"negative token wait", func(o *Options) { o.TokenWait = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			o.Transport = http.DefaultTransport
			tt.mod(&o)
			if _, err := New(o); err == nil {
				t.Errorf("New() error = nil; want an error")
			}
		})
	}
	o := ok
	o.Transport = http.DefaultTransport
	if _, err := New(o); err != nil {
		t.Errorf("New(valid) error = %v; want nil", err)
	}
}

func TestWriteError(t *testing.T) {
	tests := []struct {
		name   string
		accept []string
		method string
		wantCT string
	}{
		{"no accept", nil, "POST", "application/json"},
		{"json", []string{"application/json"}, "POST", "application/json"},
		{"graphql response", []string{"application/graphql-response+json"}, "POST", graphQLResponseType},
		{"apollo client 4", []string{"application/graphql-response+json,application/json;q=0.9"}, "POST", graphQLResponseType},
		{"second header, any case", []string{"text/html", "Application/GraphQL-Response+JSON ; charset=utf-8"}, "GET", graphQLResponseType},
		{"refused with q=0", []string{"application/graphql-response+json;q=0, application/json"}, "POST", "application/json"},
		{"wildcard", []string{"*/*"}, "POST", "application/json"},
		{"HEAD", nil, "HEAD", "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(tt.method, "/", nil)
			r.Header["Accept"] = tt.accept
			w := httptest.NewRecorder()
			WriteError(w, r, 418, "teapot", `say "hi" <now>`)
			if w.Code != 418 || w.Header().Get("Content-Type") != tt.wantCT {
				t.Errorf("WriteError = %d %q; want 418 %q", w.Code, w.Header().Get("Content-Type"), tt.wantCT)
			}
			if tt.method == "HEAD" {
				if w.Body.Len() != 0 {
					t.Errorf("HEAD body = %q; want empty", w.Body.String())
				}
				return
			}
			var env struct {
				Errors []struct {
					Message    string            `json:"message"`
					Extensions map[string]string `json:"extensions"`
				} `json:"errors"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
				t.Fatalf("body %q: %v", w.Body.String(), err)
			}
			want := []struct {
				Message    string            `json:"message"`
				Extensions map[string]string `json:"extensions"`
			}{{`say "hi" <now>`, map[string]string{"code": "teapot"}}}
			if diff := cmp.Diff(want, env.Errors); diff != "" {
				t.Errorf("errors mismatch (-want +got):\n%s", diff)
			}
			if cl := w.Header().Get("Content-Length"); cl != strconv.Itoa(w.Body.Len()) {
				t.Errorf("Content-Length = %q; body is %d bytes", cl, w.Body.Len())
			}
		})
	}
}
