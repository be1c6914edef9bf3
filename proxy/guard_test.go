package proxy

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseRoleList(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"user", []string{"user"}, false},
		{"user,me", []string{"user", "me"}, false},
		{" user , me\t,editor ", []string{"user", "me", "editor"}, false},
		{"", nil, true},
		{"   ", nil, true},
		{",", nil, true},
		{"user,", nil, true},
		{"user,,me", nil, true},
		{"user,user", nil, true},
		{"us er", nil, true},
		{"user\x00", nil, true},
		{"user\n,me", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseRoleList(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("ParseRoleList(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzParseRoleList(f *testing.F) {
	for _, s := range []string{"user", "user,me", " a , b ", "", ",", "a,a", "a b", "é,ü", "a,\tb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		roles, err := ParseRoleList(s)
		if err != nil {
			return
		}
		if len(roles) == 0 {
			t.Fatalf("ParseRoleList(%q) = no roles, no error", s)
		}
		seen := map[string]bool{}
		for _, r := range roles {
			if r == "" || strings.ContainsAny(r, ", \t\r\n\x00\x7f") || seen[r] {
				t.Fatalf("ParseRoleList(%q) returned bad or duplicate role %q", s, r)
			}
			seen[r] = true
		}
		again, err := ParseRoleList(strings.Join(roles, ","))
		if err != nil || !slices.Equal(again, roles) {
			t.Fatalf("re-parse of %q = %q, %v; want %q", strings.Join(roles, ","), again, err, roles)
		}
	})
}

func TestMatchHost(t *testing.T) {
	def := []string{"localhost", "127.0.0.1", "::1"}
	tests := []struct {
		host    string
		allowed []string
		want    bool
	}{
		{"localhost", def, true},
		{"localhost:8080", def, true},
		{"LOCALHOST:8080", def, true},
		{"localhost.:8080", def, true},
		{"127.0.0.1:8080", def, true},
		{"[::1]:8080", def, true},
		{"[::1]", def, true},
		{"::1", def, true},
		{"[::1]x", def, false},
		{"[::1", def, false},
		{"localhost:80x", def, false},
		{"evil.example", def, false},
		{"localhost.evil.example", def, false},
		{"127.0.0.1.nip.io", def, false},
		{"", def, false},
		{"anything", []string{"*"}, true},
		{"", []string{"*"}, true},
		{"proxy.svc:8080", []string{"Proxy.SVC:1"}, true},
		{"[::1]:1", []string{"[::1]:9"}, true},
	}
	for _, tt := range tests {
		if got := MatchHost(tt.host, tt.allowed); got != tt.want {
			t.Errorf("MatchHost(%q, %q) = %v; want %v", tt.host, tt.allowed, got, tt.want)
		}
	}
}

func FuzzMatchHost(f *testing.F) {
	for _, s := range []string{"localhost", "localhost:8080", "[::1]:80", "::1", "[::1", "a.b.", ":80", "[]:1", "LOCALHOST"} {
		f.Add(s, "localhost")
	}
	f.Add("0..", "0 ") // found by fuzzing: the port check itself dropped a second trailing dot
	f.Fuzz(func(t *testing.T, host, allowed string) {
		got := MatchHost(host, []string{allowed})
		if !MatchHost(host, []string{"*"}) {
			t.Fatalf("MatchHost(%q, *) = false", host)
		}
		if MatchHost(strings.ToUpper(host), []string{allowed}) != got && isASCII(host) {
			t.Fatalf("MatchHost(%q) and its upper case disagree", host)
		}
		// The port never matters. (Add one to a host that has none: rebuilding it
		// from hostName's result would drop a second trailing dot, as in "0..".)
		if _, ok := hostName(host); ok && !strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
			if MatchHost(host+":1234", []string{allowed}) != got {
				t.Fatalf("MatchHost(%q) and MatchHost(%q) disagree", host, host+":1234")
			}
		}
		if got && !MatchHost(strings.TrimSpace(allowed), []string{host}) && !strings.Contains(allowed, "*") {
			// Symmetric for well-formed values on both sides.
			if _, ok := hostName(allowed); ok {
				t.Fatalf("MatchHost not symmetric for %q, %q", host, allowed)
			}
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func TestNormalizeOrigin(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"http://localhost:3000", "http://localhost:3000", false},
		{"HTTPS://App.Example", "https://app.example", false},
		{"https://app.example:443", "https://app.example", false},
		{"http://app.example:80", "http://app.example", false},
		{"http://app.example:443", "http://app.example:443", false},
		{"http://[::1]:3000", "http://[::1]:3000", false},
		{"chrome-extension://abcdef", "chrome-extension://abcdef", false},
		{"null", "", true},
		{"app.example", "", true},
		{"http://", "", true},
		{"http://app.example/", "", true},
		{"http://app.example/path", "", true},
		{"http://user@app.example", "", true},
		{"http://app.example?q", "", true},
		{"http://app.example#f", "", true},
		{"http://app.example:x", "", true},
		{"http://app.example.", "", true},
		{"http://:80", "", true},
		{"1http://a", "", true},
		{"://a", "", true},
		{"http://a b", "", true},
		{"https://0:a:443", "", true}, // bare IPv6-like host: found by FuzzNormalizeOrigin
		{"http://[::1]:80", "http://[::1]", false},
		{"HTTPS://.:443", "", true},            // found by FuzzNormalizeOrigin: normalised to "https://.", which it refuses
		{"https://app.example.:443", "", true}, // a trailing dot is refused with a port too
		{"http://app.example:", "", true},      // empty port
		{"http://[::1]", "http://[::1]", false},
	}
	for _, tt := range tests {
		got, err := NormalizeOrigin(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzNormalizeOrigin(f *testing.F) {
	for _, s := range []string{"http://localhost:3000", "HTTPS://a.b:443", "null", "http://[::1]:1", "a://b", "http://a/b", "http://a:", "https://0:a:443", "HTTPS://.:443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeOrigin(s)
		if MatchOrigin(s, nil) {
			t.Fatalf("MatchOrigin(%q, nil) = true", s)
		}
		if err != nil {
			return
		}
		if n == "null" || !strings.Contains(n, "://") || strings.ToLower(n) != n {
			t.Fatalf("NormalizeOrigin(%q) = %q: not a lower-case origin", s, n)
		}
		if again, err := NormalizeOrigin(n); err != nil || again != n {
			t.Fatalf("NormalizeOrigin(%q) = %q, %v; want it unchanged", n, again, err)
		}
		if !MatchOrigin(n, []string{n}) {
			t.Fatalf("MatchOrigin(%q, [itself]) = false", n)
		}
		if n != s && MatchOrigin(s, []string{n}) {
			t.Fatalf("MatchOrigin(%q, [%q]) = true; want exact matching", s, n)
		}
	})
}

// dotSegmentRef is the obvious implementation hasDotSegment must agree with.
func dotSegmentRef(p string) bool {
	for _, seg := range strings.FieldsFunc(strings.ReplaceAll(p, `\`, "/"), func(r rune) bool { return r == '/' }) {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

func FuzzHasDotSegment(f *testing.F) {
	for _, s := range []string{"/v1/graphql", "/v1/../x", "/.", "..", `/a\..\b`, "/a/.../b", "/a/.b", "//..//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if got, want := hasDotSegment(p), dotSegmentRef(p); got != want {
			t.Fatalf("hasDotSegment(%q) = %v; want %v", p, got, want)
		}
	})
}

// asciiLower lower-cases ASCII letters only, like HTTP header name comparison.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func FuzzStrippedHeader(f *testing.F) {
	for _, s := range []string{"Authorization", "x-HASURA-admin-secret", "X_Hasura_Role", "Cookie", "X-Forwarded-Port", "Forwarded", "X-Real-Ip", "Origin", "Content-Type", "X-Hasura", "X-Forwarded"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, k string) {
		n := strings.ReplaceAll(asciiLower(k), "_", "-")
		want := forbiddenUpstream(n)
		if got := strippedHeader(k); got != want {
			t.Fatalf("strippedHeader(%q) = %v; want %v", k, got, want)
		}
	})
}

func TestCORSAllowHeaders(t *testing.T) {
	tests := []struct {
		requested []string
		want      string
	}{
		{nil, "Content-Type, X-Hasura-Role"},
		{[]string{"content-type"}, "Content-Type, X-Hasura-Role"},
		{[]string{"x-apollo-operation-name, apollo-require-preflight"}, "Content-Type, X-Hasura-Role, x-apollo-operation-name, apollo-require-preflight"},
		{[]string{"authorization,cookie,x-hasura-admin-secret,x-forwarded-for,origin,host,connection"}, "Content-Type, X-Hasura-Role"},
		{[]string{"bad header, ok", "traceparent"}, "Content-Type, X-Hasura-Role, ok, traceparent"},
	}
	for _, tt := range tests {
		if got := corsAllowHeaders(tt.requested); got != tt.want {
			t.Errorf("corsAllowHeaders(%q) = %q; want %q", tt.requested, got, tt.want)
		}
	}
}

// FuzzSniff: for any body split into any reads, the sniffer's verdict is exactly
// "a complete invalid-jwt envelope under the cap", and every byte reaches the reader
// in order.
func FuzzSniff(f *testing.F) {
	for _, s := range []string{bodyInvalidJWT, bodyAccessDenied, bodyData, `{"errors"`, "", "{", `{"errors":[{"extensions":{"path":"$","code":"invalid-jwt"}}]}`} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, split uint8) {
		var r io.Reader = bytes.NewReader(body)
		switch split % 3 {
		case 1:
			r = iotest.OneByteReader(r)
		case 2:
			r = iotest.HalfReader(r)
		}
		var s sniffBody
		s.reset(io.NopCloser(r))
		got := s.sniff()
		want := len(body) < sniffCap && isInvalidJWT(body)
		if got != want {
			t.Fatalf("sniff(%q) = %v; want %v", body, got, want)
		}
		all, err := io.ReadAll(&s)
		if err != nil || !bytes.Equal(all, body) {
			t.Fatalf("read through sniffer = %q, %v; want %q", all, err, body)
		}
		s.Close()
	})
}
