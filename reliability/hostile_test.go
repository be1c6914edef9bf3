package reliability

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// rawResponse is what came back on a raw connection.
type rawResponse struct {
	status int // 0 when the server closed without answering
	header http.Header
	body   string
	err    error // reading the response failed
}

// rawRequest writes raw on a new connection to addr and reads one response.
func rawRequest(t *testing.T, addr, raw string) rawResponse {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return rawResponse{err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return rawResponse{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// recorded is one request as the recording upstream received it, bytes included.
type recorded struct {
	raw              []byte // request line, headers and body exactly as they arrived
	method, uri      string
	header           http.Header
	body             []byte
	contentLength    int64
	transferEncoding []string
}

// recordingUpstream is a hand-written HTTP/1.1 upstream that keeps the exact bytes of
// every request it receives and answers each with a small 200.
type recordingUpstream struct {
	tcpServer

	reqMu sync.Mutex
	reqs  []recorded
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{}
	u.start(t, u.serve)
	return u
}

func (u *recordingUpstream) serve(c net.Conn) {
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		// What was read beyond this request (pipelined bytes) stays buffered in br.
		n := raw.Len() - br.Buffered()
		rec := recorded{
			raw: append([]byte(nil), raw.Bytes()[:n]...), method: req.Method, uri: req.RequestURI,
			header: req.Header, body: body, contentLength: req.ContentLength, transferEncoding: req.TransferEncoding,
		}
		raw.Next(n)
		u.reqMu.Lock()
		u.reqs = append(u.reqs, rec)
		u.reqMu.Unlock()
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(okBody), okBody)
	}
}

func (u *recordingUpstream) requests() []recorded {
	u.reqMu.Lock()
	defer u.reqMu.Unlock()
	return append([]recorded(nil), u.reqs...)
}

// chunked encodes body as one chunk and the last chunk.
func chunked(body string) string {
	return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
}

// TestHostileRequestsNeverReachUpstream: requests the proxy must refuse — absolute-form
// and CONNECT, dot segments (raw and percent-encoded) that could climb out of
// DXTRA_API_URL's base path, foreign Host names (DNS rebinding), cross-site Origins,
// oversized headers and bodies, ambiguous framing — sent as hand-written bytes. Each
// gets the status SPEC names (the proxy's GraphQL-shaped error, or Go's own plain
// answer for framing it refuses before any handler), and the upstream receives
// nothing. Controls (a body at the limit, an allowed Origin) do get through.
func TestHostileRequestsNeverReachUpstream(t *testing.T) {
	t.Parallel()
	const maxBody = 4096
	fake := newFake(t, dxtratest.Options{})
	up := newRecordingUpstream(t)
	p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT(),
		"DXTRA_API_URL", up.URL+"/base",
		"DXTRA_MAX_BODY_BYTES", fmt.Sprint(maxBody),
		"DXTRA_ALLOWED_ORIGINS", "https://app.example"))
	waitReady(t, p)

	post := func(target, extra, body string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			target, extra, len(body), body)
	}
	get := func(target, hostAndHeaders string) string {
		return fmt.Sprintf("GET %s HTTP/1.1\r\n%s\r\nConnection: close\r\n\r\n", target, hostAndHeaders)
	}
	big := strings.Repeat("a", maxBody+1)
	for _, tc := range []struct {
		name   string
		raw    string
		status int
		code   string // the proxy's error code; "" for Go's own plain-text answer
	}{
		{"absolute-form to a foreign host", get("http://evil.example/v1/graphql", "Host: evil.example"), 400, "bad-request"},
		{"absolute-form to the proxy itself", get("http://127.0.0.1/v1/graphql", "Host: 127.0.0.1"), 400, "bad-request"},
		{"CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 400, "bad-request"},
		{"asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400, "bad-request"},
		{"dot-dot segment", get("/../v1/graphql", "Host: 127.0.0.1"), 400, "bad-request"},
		{"dot segment", get("/./v1/graphql", "Host: 127.0.0.1"), 400, "bad-request"},
		{"encoded dot-dot", get("/%2e%2e/v1/graphql", "Host: 127.0.0.1"), 400, "bad-request"},
		{"encoded dot-dot mixed case", get("/%2E%2e/v1/graphql", "Host: 127.0.0.1"), 400, "bad-request"},
		{"dot-dot with encoded slash", get("/v1/graphql/..%2f..", "Host: 127.0.0.1"), 400, "bad-request"},
		{"fully encoded climb", get("/v1/graphql/%2e%2e%2f%2e%2e%2fadmin", "Host: 127.0.0.1"), 400, "bad-request"},
		{"dot-dot with encoded backslash", get("/v1/graphql/..%5c..%5cadmin", "Host: 127.0.0.1"), 400, "bad-request"},
		{"trailing dot-dot", get("/v1/..", "Host: 127.0.0.1"), 400, "bad-request"},
		{"POST climbing out", post("/v1/graphql/../../admin", "", graphqlQuery), 400, "bad-request"},
		{"foreign Host (DNS rebinding)", get("/v1/graphql", "Host: evil.example"), 403, "host-not-allowed"},
		{"Host with an allowed name as a prefix", get("/v1/graphql", "Host: localhost.evil.example"), 403, "host-not-allowed"},
		{"Host with an allowed IP as a prefix", get("/v1/graphql", "Host: 127.0.0.1.nip.io"), 403, "host-not-allowed"},
		{"Host missing", "GET /v1/graphql HTTP/1.1\r\nConnection: close\r\n\r\n", 400, ""},
		{"cross-site Origin", post(graphqlPath, "Origin: https://evil.example\r\n", graphqlQuery), 403, "origin-not-allowed"},
		{"Origin null", post(graphqlPath, "Origin: null\r\n", graphqlQuery), 403, "origin-not-allowed"},
		{"allowed Origin with another port", post(graphqlPath, "Origin: https://app.example:8443\r\n", graphqlQuery), 403, "origin-not-allowed"},
		{"two Origins", post(graphqlPath, "Origin: https://app.example\r\nOrigin: https://evil.example\r\n", graphqlQuery), 403, "origin-not-allowed"},
		{"header block over 64 KiB", get("/v1/graphql", "Host: 127.0.0.1\r\nX-Big: "+strings.Repeat("b", 70<<10)), 431, ""},
		{"body over the limit (Content-Length)", post(graphqlPath, "", big), 413, "body-too-large"},
		{"body over the limit (Content-Length, nothing sent)", fmt.Sprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\n", graphqlPath), 413, "body-too-large"},
		{"body over the limit (chunked)", "POST " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked(big), 413, "body-too-large"},
		{"duplicate differing Content-Length", "POST " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef", 400, ""},
		{"Content-Length list", "POST " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5, 6\r\n\r\nabcdef", 400, ""},
		{"negative Content-Length", "POST " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\nabcdef", 400, ""},
		{"two Transfer-Encodings", "POST " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + chunked("abc"), 501, ""},
		{"Transfer-Encoding other than chunked", "POST " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked("abc"), 501, ""},
		{"space before the colon", "POST " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc", 400, ""},
		{"CR inside a header value", "GET " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: a\rX-Hasura-Admin-Secret: s\r\n\r\n", 400, ""},
		{"NUL inside a header value", "GET " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: a\x00b\r\n\r\n", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.requests())
			r := rawRequest(t, p.Listen, tc.raw)
			if r.err != nil && r.status == 0 {
				t.Fatalf("no answer: %v", r.err)
			}
			if r.status != tc.status {
				t.Errorf("status = %d (%q); want %d", r.status, truncate(r.body), tc.status)
			}
			if got := errorCode(r.body); got != tc.code {
				t.Errorf("error code = %q (body %q); want %q", got, truncate(r.body), tc.code)
			}
			if got := up.requests()[before:]; len(got) != 0 {
				t.Errorf("the upstream received %d request(s), first %s %s; want none", len(got), got[0].method, got[0].uri)
			}
		})
	}

	// Controls: what is allowed does reach the upstream, under the base path.
	for _, tc := range []struct {
		name, raw, uri string
	}{
		{"body at the limit", post(graphqlPath, "", strings.Repeat("a", maxBody)), "/base/v1/graphql"},
		{"allowed Origin", post(graphqlPath, "Origin: https://app.example\r\n", graphqlQuery), "/base/v1/graphql"},
		{"dots inside a segment", get("/v1/graphql/..a/a..", "Host: localhost:8080"), "/base/v1/graphql/..a/a.."},
	} {
		t.Run("control: "+tc.name, func(t *testing.T) {
			before := len(up.requests())
			if r := rawRequest(t, p.Listen, tc.raw); r.status != http.StatusOK || r.body != okBody {
				t.Errorf("status = %d %q; want 200 from the upstream", r.status, truncate(r.body))
			}
			got := up.requests()[before:]
			if len(got) != 1 || got[0].uri != tc.uri {
				t.Fatalf("the upstream received %d request(s) %v; want one for %s", len(got), got, tc.uri)
			}
			if _, ok := got[0].header["Origin"]; ok {
				t.Errorf("the upstream received Origin %q; want none", got[0].header.Get("Origin"))
			}
		})
	}
	for _, r := range up.requests() {
		if !strings.HasPrefix(r.uri, "/base/") || hasDotSegment(r.uri) {
			t.Errorf("the upstream received %q outside the base path", r.uri)
		}
	}
}

// hasDotSegment reports whether a request target's path has a "." or ".." segment
// before or after percent-decoding.
func hasDotSegment(uri string) bool {
	path, _, _ := strings.Cut(uri, "?")
	path = strings.NewReplacer("%2e", ".", "%2E", ".", "%2f", "/", "%2F", "/", "%5c", "/", "%5C", "/", "\\", "/").Replace(path)
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// TestRequestSmugglingIsNeutralised: a request whose framing two parsers could read
// differently (Transfer-Encoding chunked and a Content-Length, the chunk holding what
// looks like a second request carrying an admin secret). The proxy reads it one way
// (chunked) and forwards exactly one request, re-framed with a Content-Length that
// matches the body and no Transfer-Encoding, so that no parser upstream can find a
// second request in it; the "smuggled" text arrives as body bytes only.
func TestRequestSmugglingIsNeutralised(t *testing.T) {
	t.Parallel()
	fake := newFake(t, dxtratest.Options{})
	up := newRecordingUpstream(t)
	p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT(), "DXTRA_API_URL", up.URL))
	waitReady(t, p)

	smuggled := "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Hasura-Admin-Secret: s\r\n\r\n"
	for _, tc := range []struct {
		name, framing string
	}{
		{"TE then CL", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"},
		{"CL then TE", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"},
		{"CL 0 and TE", "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"},
		{"TE upper case", "Content-Length: 4\r\nTransfer-Encoding: CHUNKED\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.requests())
			raw := "POST " + graphqlPath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + tc.framing +
				"Connection: close\r\n\r\n" + chunked(smuggled)
			r := rawRequest(t, p.Listen, raw)
			got := up.requests()[before:]
			if r.status == http.StatusBadRequest && len(got) == 0 {
				return // refused outright: as good
			}
			if r.status != http.StatusOK {
				t.Fatalf("status = %d %q; want 200 (forwarded once) or 400", r.status, truncate(r.body))
			}
			if len(got) != 1 {
				t.Fatalf("the upstream received %d requests; want exactly 1", len(got))
			}
			g := got[0]
			if g.uri != graphqlPath || string(g.body) != smuggled {
				t.Errorf("the upstream received %s %s with body %q; want POST %s with the chunk's bytes as its body", g.method, g.uri, g.body, graphqlPath)
			}
			if g.contentLength != int64(len(smuggled)) || len(g.transferEncoding) != 0 || len(g.header["Content-Length"]) != 1 {
				t.Errorf("upstream framing: Content-Length %v, Transfer-Encoding %v; want exactly one Content-Length %d and no Transfer-Encoding", g.header["Content-Length"], g.transferEncoding, len(smuggled))
			}
			if bytes.Contains(bytes.ToLower(g.raw), []byte("transfer-encoding")) {
				t.Errorf("the upstream's bytes carry a Transfer-Encoding header:\n%s", g.raw)
			}
		})
	}
	for _, r := range up.requests() {
		if r.uri == "/smuggled" || r.header.Get("X-Hasura-Admin-Secret") != "" {
			t.Errorf("a smuggled request reached the upstream: %s %s", r.method, r.uri)
		}
	}
}

// TestSpoofedHeadersNeverReachUpstream: a caller sends every credential and identity
// header it could use to act as someone else — Authorization (twice), Cookie, the admin
// secret and access key in several spellings (case, underscores), other X-Hasura-*
// session variables, forwarding headers, Origin, Proxy-Authorization, and a Connection
// header naming the ones the proxy sets. The upstream receives none of them: exactly
// the proxy's one valid Bearer token and one X-Hasura-Role.
func TestSpoofedHeadersNeverReachUpstream(t *testing.T) {
	t.Parallel()
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT(), "DXTRA_ALLOWED_ORIGINS", "https://app.example"))
	waitReady(t, p)

	spoofed := strings.Join([]string{
		"Authorization: Bearer evil.evil.evil",
		"authorization: Basic ZXZpbDpldmls",
		"Cookie: nhostRefreshToken=evil",
		"X-Hasura-Admin-Secret: evil",
		"x-hasura-admin-secret: evil",
		"X-HASURA-ADMIN-SECRET: evil",
		"X_Hasura_Admin_Secret: evil",
		"X-Hasura-Access-Key: evil",
		"X-Hasura-User-Id: 00000000-0000-0000-0000-000000000000",
		"X-Hasura-Allowed-Roles: admin",
		"X-Hasura-Use-Backend-Only-Permissions: true",
		"X-Forwarded-For: 10.0.0.1",
		"X-Forwarded-Host: api.dxtra.ai",
		"X-Forwarded-Proto: https",
		"X-Real-IP: 10.0.0.1",
		"Forwarded: for=10.0.0.1",
		"Origin: https://app.example",
		"Proxy-Authorization: Basic ZXZpbDpldmls",
		"Connection: keep-alive, Authorization, X-Hasura-Role",
		"X-Note: kept",
	}, "\r\n")
	raw := "POST " + graphqlPath + " HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/json\r\n" + spoofed +
		fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n%s", len(graphqlQuery), graphqlQuery)
	fake.ResetRequests()
	r := rawRequest(t, p.Listen, raw)
	if r.status != http.StatusOK {
		t.Fatalf("status = %d %q; want 200", r.status, truncate(r.body))
	}
	if err := wantData(r.body); err != nil {
		t.Errorf("answer: %v", err)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("the upstream received %d requests; want 1", len(reqs))
	}
	got := reqs[0]
	if !got.TokenValid || len(got.Header["Authorization"]) != 1 {
		t.Errorf("upstream Authorization = %q (valid %v); want exactly the proxy's one valid token", got.Header["Authorization"], got.TokenValid)
	}
	if role := got.Header["X-Hasura-Role"]; len(role) != 1 || role[0] != "user" || got.Role != "user" {
		t.Errorf("upstream X-Hasura-Role = %q; want exactly [user]", role)
	}
	for name, vals := range got.Header {
		n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		switch {
		case n == "authorization" || n == "x-hasura-role":
		case strings.HasPrefix(n, "x-hasura-"), strings.HasPrefix(n, "x-forwarded-"),
			n == "cookie", n == "forwarded", n == "x-real-ip", n == "origin", n == "proxy-authorization":
			t.Errorf("the upstream received %s: %q", name, vals)
		}
		for _, v := range vals {
			if strings.Contains(v, "evil") || strings.Contains(v, "10.0.0.1") {
				t.Errorf("the upstream received a spoofed value in %s: %q", name, v)
			}
		}
	}
	if got.Header.Get("X-Note") != "kept" {
		t.Errorf("the upstream lost an ordinary header: X-Note = %q", got.Header.Get("X-Note"))
	}

	// Header injection: line breaks inside a header line. Go's server refuses a bare CR
	// (see TestHostileRequestsNeverReachUpstream); a bare LF ends the line and an
	// obs-fold continuation joins two. Whatever Go makes of them, nothing spoofed may
	// come out at the upstream, and no value there may hold a line break.
	for _, tc := range []struct{ name, lines string }{
		{"bare LF", "X-Note: a\nX-Hasura-Admin-Secret: s\r\nX-Other: b\nAuthorization: Bearer evil\r\n"},
		{"obs-fold", "X-Note: a\r\n X-Hasura-Admin-Secret: s\r\nX-Other: b\r\n\tAuthorization: Bearer evil\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake.ResetRequests()
			r := rawRequest(t, p.Listen, "GET "+graphqlPath+" HTTP/1.1\r\nHost: 127.0.0.1\r\n"+tc.lines+"Connection: close\r\n\r\n")
			reqs := fake.Requests()
			t.Logf("status %d; forwarded %d", r.status, len(reqs))
			for _, req := range reqs {
				if !req.TokenValid || len(req.Header["Authorization"]) != 1 {
					t.Errorf("upstream Authorization = %q (valid %v); want only the proxy's token", req.Header["Authorization"], req.TokenValid)
				}
				for name, vals := range req.Header {
					if strings.HasPrefix(strings.ToLower(name), "x-hasura-") && name != "X-Hasura-Role" {
						t.Errorf("the upstream received %s: %q", name, vals)
					}
					for _, v := range vals {
						if strings.ContainsAny(v, "\r\n") || strings.Contains(v, "evil") && name == "Authorization" {
							t.Errorf("the upstream received %s: %q", name, v)
						}
					}
				}
			}
		})
	}
}

// TestSlowlorisHeadersAreCut: a client that opens a connection and trickles header
// bytes forever is disconnected by the proxy once ReadHeaderTimeout (10 s) has passed
// since the request began, however steadily it trickles; the proxy keeps serving
// others meanwhile.
func TestSlowlorisHeadersAreCut(t *testing.T) {
	t.Parallel()
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT()))
	waitReady(t, p)

	c, err := net.Dial("tcp", p.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "GET "+graphqlPath+" HTTP/1.1\r\nHost: 127.0.0.1\r\n"); err != nil {
		t.Fatal(err)
	}
	// Trickle a header byte every 200 ms until the server hangs up.
	closed := make(chan time.Time, 1)
	go func() {
		b := make([]byte, 512)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := c.Read(b); err != nil {
				closed <- time.Now()
				return
			}
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var cut time.Time
	wrote := 0
	client, _ := newClient(t, false)
	for cut.IsZero() {
		select {
		case cut = <-closed:
		case <-tick.C:
			if _, err := io.WriteString(c, "X"); err == nil {
				wrote++
			}
			if wrote == 10 { // meanwhile, others are served
				if err := queryOnce(t.Context(), client, p); err != nil {
					t.Errorf("a normal request during the slowloris: %v", err)
				}
			}
		}
	}
	held := cut.Sub(start)
	t.Logf("the server hung up after %s (%d bytes trickled)", held.Round(time.Millisecond), wrote)
	if held < 9*time.Second || held > 12*time.Second {
		t.Errorf("the slowloris connection was held %s; want it cut at ReadHeaderTimeout (10 s)", held)
	}
}
