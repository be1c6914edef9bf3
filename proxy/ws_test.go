package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// wsTokens is a TokenSource over dxtratest's real PAT exchange, with the token
// cache's rules that matter to the relay: a token is usable until
// expiry − min(5 s, lifetime/10), where expiry is the earlier of the JWT's exp and
// arrival + accessTokenExpiresIn; Token exchanges when no usable token is held; Changed
// is closed when the token is replaced. It renews only when told to (renew).
type wsTokens struct {
	fake   *dxtratest.Server
	pat    string
	client *http.Client

	mu      sync.Mutex
	jwt     string
	until   time.Time
	changed chan struct{}
	down    bool // the auth service is unreachable: Token waits for ctx and fails
}

func newWSTokens(t *testing.T, fake *dxtratest.Server) *wsTokens {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &wsTokens{fake: fake, pat: fake.NewPAT(), client: &http.Client{Transport: tr, Timeout: failAfter},
		changed: make(chan struct{})}
}

func (s *wsTokens) Token(ctx context.Context) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jwt != "" && time.Now().Before(s.until) {
		return s.jwt, s.until, nil
	}
	if s.down {
		s.mu.Unlock()
		<-ctx.Done()
		s.mu.Lock()
		return "", time.Time{}, fmt.Errorf("no token: %w", ctx.Err())
	}
	if err := s.exchangeLocked(ctx); err != nil {
		return "", time.Time{}, err
	}
	return s.jwt, s.until, nil
}

func (s *wsTokens) Renew(ctx context.Context, rejected string) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rejected == s.jwt {
		if err := s.exchangeLocked(ctx); err != nil {
			return "", time.Time{}, err
		}
	}
	return s.jwt, s.until, nil
}

func (s *wsTokens) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// renew replaces the token now, as the cache's renewal loop does.
func (s *wsTokens) renew(t *testing.T) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.exchangeLocked(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s.jwt
}

func (s *wsTokens) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jwt
}

func (s *wsTokens) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *wsTokens) exchangeLocked(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.fake.AuthBaseURL()+"/signin/pat",
		strings.NewReader(`{"personalAccessToken":"`+s.pat+`"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Session struct {
			AccessToken          string `json:"accessToken"`
			AccessTokenExpiresIn int64  `json:"accessTokenExpiresIn"`
		} `json:"session"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("signin/pat: status %d: %v", resp.StatusCode, err)
	}
	arrival := time.Now()
	expiry := arrival.Add(time.Duration(body.Session.AccessTokenExpiresIn) * time.Second)
	if exp := jwtExp(body.Session.AccessToken); exp.Before(expiry) {
		expiry = exp
	}
	margin := min(5*time.Second, expiry.Sub(arrival)/10)
	s.jwt, s.until = body.Session.AccessToken, expiry.Add(-margin)
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// jwtExp reads a JWT's exp claim without verifying it (zero time when unreadable).
func jwtExp(jwt string) time.Time {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil {
		return time.Time{}
	}
	return time.Unix(c.Exp, 0)
}

// wsEnv is the real handler, served by httptest on loopback, in front of dxtratest.
type wsEnv struct {
	fake   *dxtratest.Server
	tokens *wsTokens
	h      *Handler
	srv    *httptest.Server
	base   string // ws://127.0.0.1:port
	client *http.Client
	gauge  atomic.Int64
	deltas chan int
}

func newWSEnv(t *testing.T, fo dxtratest.Options, po Options) *wsEnv {
	t.Helper()
	if fo.TickInterval == 0 {
		fo.TickInterval = 20 * time.Millisecond
	}
	e := &wsEnv{deltas: make(chan int, 100)}
	e.fake = dxtratest.NewServer(fo)
	t.Cleanup(e.fake.Close)
	e.tokens = newWSTokens(t, e.fake)
	if po.Upstream == nil {
		up, err := url.Parse(e.fake.APIURL)
		if err != nil {
			t.Fatal(err)
		}
		po.Upstream = up
	}
	if po.Tokens == nil {
		po.Tokens = e.tokens
	}
	if po.Role == "" {
		po.Role = "user"
	}
	tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	po.Transport = tr
	po.OnWebSocket = func(d int) {
		e.gauge.Add(int64(d))
		e.deltas <- d
	}
	if e.h, err = New(po); err != nil {
		t.Fatalf("New() error = %v", err)
	}
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failAfter)
		defer cancel()
		if err := e.h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() at cleanup = %v", err)
		}
		e.srv.Close()
	})
	ct := &http.Transport{}
	t.Cleanup(ct.CloseIdleConnections)
	e.client = &http.Client{Transport: ct}
	e.base = "ws" + strings.TrimPrefix(e.srv.URL, "http")
	return e
}

// tryDial opens a WebSocket to the proxy.
func (e *wsEnv) tryDial(path string, opts websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), failAfter)
	defer cancel()
	opts.HTTPClient = e.client
	c, resp, err := websocket.Dial(ctx, e.base+path, &opts)
	if c != nil {
		c.SetReadLimit(wsReadLimit)
	}
	return c, resp, err
}

func (e *wsEnv) dial(t *testing.T, hdr http.Header, protos ...string) *websocket.Conn {
	t.Helper()
	c, _, err := e.tryDial("/v1/graphql", websocket.DialOptions{HTTPHeader: hdr, Subprotocols: protos})
	if err != nil {
		t.Fatalf("dial through the proxy: %v", err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// connect dials with subprotocol proto, sends connection_init with payload (omitted
// when "") and waits for connection_ack.
func (e *wsEnv) connect(t *testing.T, proto, payload string) *websocket.Conn {
	t.Helper()
	c := e.dial(t, nil, proto)
	wsSend(t, c, initMessage(payload))
	wsExpect(t, c, "connection_ack")
	return c
}

// session returns the upstream's record of the i-th WebSocket connection. The fake
// records a connection just after its handshake, so the record may trail the client's
// own handshake by a moment: it is polled for.
func (e *wsEnv) session(t *testing.T, i int) dxtratest.WSSession {
	t.Helper()
	deadline := time.Now().Add(failAfter)
	for {
		ss := e.fake.WSSessions()
		if len(ss) > i {
			return ss[i]
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream saw %d WebSocket connections; want at least %d", len(ss), i+1)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDelta waits for the next OnWebSocket call.
func (e *wsEnv) waitDelta(t *testing.T) int {
	t.Helper()
	select {
	case d := <-e.deltas:
		return d
	case <-time.After(failAfter):
		t.Fatal("OnWebSocket was not called")
		return 0
	}
}

func initMessage(payload string) string {
	if payload == "" {
		return `{"type":"connection_init"}`
	}
	return `{"type":"connection_init","payload":` + payload + `}`
}

// wsProto is what differs between the two subprotocols in these tests.
type wsProto struct {
	name, subscribe, data, stop string
}

var wsProtos = []wsProto{
	{protoTransportWS, "subscribe", "next", "complete"},
	{protoApollo, "start", "data", "stop"},
}

func subscribeMessage(p wsProto, id, query string) string {
	q, _ := json.Marshal(query)
	return `{"id":"` + id + `","type":"` + p.subscribe + `","payload":{"query":` + string(q) + `}}`
}

func wsSend(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failAfter)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %.80s: %v", msg, err)
	}
}

type wsMessage struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

// wsRead reads the next message; ctx bounds the wait.
func wsRead(ctx context.Context, t *testing.T, c *websocket.Conn) (wsMessage, error) {
	t.Helper()
	_, b, err := c.Read(ctx)
	if err != nil {
		return wsMessage{}, err
	}
	var m wsMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %.200s is not JSON: %v", b, err)
	}
	return m, nil
}

// wsExpect reads messages, skipping subscription data, until one of type typ; it fails
// on any other message or when none comes within failAfter.
func wsExpect(t *testing.T, c *websocket.Conn, typ string) wsMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failAfter)
	defer cancel()
	for {
		m, err := wsRead(ctx, t, c)
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if m.Type == typ {
			return m
		}
		if m.Type != "next" && m.Type != "data" {
			t.Fatalf("got message %+v; want %s", m, typ)
		}
	}
}

// wsCloseOf reads until the connection ends and returns the close frame received;
// it fails when the connection ended without one, or did not end within failAfter.
func wsCloseOf(t *testing.T, c *websocket.Conn) websocket.CloseError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failAfter)
	defer cancel()
	for {
		_, err := wsRead(ctx, t, c)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame, or not within %s: %v", failAfter, err)
		}
		return ce
	}
}

// initHeadersOf decodes a recorded connection_init payload's headers.
func initHeadersOf(t *testing.T, payload json.RawMessage) (headers map[string]any, rest map[string]any) {
	t.Helper()
	if err := json.Unmarshal(payload, &rest); err != nil {
		t.Fatalf("upstream got connection_init payload %s: %v", payload, err)
	}
	headers, _ = rest["headers"].(map[string]any)
	delete(rest, "headers")
	return headers, rest
}

func TestWebSocketInjectsAuthIntoConnectionInit(t *testing.T) {
	for _, p := range wsProtos {
		t.Run(p.name, func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{})
			hdr := http.Header{
				"Authorization":    {"Bearer stale-upgrade-token"},
				"Cookie":           {"session=1"},
				"X-Hasura-User-Id": {"7"},
				"X-Forwarded-For":  {"10.0.0.1"},
				"X-App":            {"upgrade-header-kept"},
			}
			c := e.dial(t, hdr, p.name)
			wsSend(t, c, initMessage(`{"lazy":true,"headers":{"Authorization":"Bearer stale-payload-token","cookie":"c=1","x-hasura-user-id":"7","X-HASURA-ADMIN-SECRET":"root","X-App":"payload-header-kept"}}`))
			wsExpect(t, c, "connection_ack")

			s := e.session(t, 0)
			if s.UpgradeAuthorization {
				t.Errorf("upgrade request carried Authorization %q; want none (the token travels in connection_init only)", s.UpgradeHeader.Values("Authorization"))
			}
			for _, k := range []string{"Cookie", "X-Hasura-User-Id", "X-Hasura-Role", "X-Forwarded-For", "Origin"} {
				if v := s.UpgradeHeader.Values(k); len(v) > 0 {
					t.Errorf("upgrade request carried %s: %q; want none", k, v)
				}
			}
			if got := s.UpgradeHeader.Get("X-App"); got != "upgrade-header-kept" {
				t.Errorf("upgrade request X-App = %q; want the client's value", got)
			}
			headers, rest := initHeadersOf(t, s.InitPayload)
			want := map[string]any{
				"Authorization": "Bearer " + e.tokens.current(),
				"X-Hasura-Role": "user",
				"X-App":         "payload-header-kept",
			}
			if diff := cmp.Diff(want, headers); diff != "" {
				t.Errorf("connection_init payload.headers upstream (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]any{"lazy": true}, rest); diff != "" {
				t.Errorf("other payload keys upstream (-want +got):\n%s", diff)
			}
			if !s.Authenticated || s.Role != "user" {
				t.Errorf("upstream session authenticated = %v, role %q; want true, user", s.Authenticated, s.Role)
			}
		})
	}
}

func TestWebSocketPayloadShapes(t *testing.T) {
	for _, p := range wsProtos {
		for _, payload := range []string{"", "null", `"a string"`, `[1]`, `{"headers":null}`, `{"headers":"Bearer x"}`} {
			t.Run(p.name+"/"+payload, func(t *testing.T) {
				e := newWSEnv(t, dxtratest.Options{}, Options{})
				e.connect(t, p.name, payload)
				s := e.session(t, 0)
				headers, _ := initHeadersOf(t, s.InitPayload)
				want := map[string]any{"Authorization": "Bearer " + e.tokens.current(), "X-Hasura-Role": "user"}
				if diff := cmp.Diff(want, headers); diff != "" {
					t.Errorf("payload.headers upstream (-want +got):\n%s", diff)
				}
				if !s.Authenticated {
					t.Errorf("upstream refused the connection: %s", s.AuthError)
				}
			})
		}
	}
}

func TestWebSocketRoleChoice(t *testing.T) {
	for _, p := range wsProtos {
		t.Run(p.name, func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{AllowedRoles: []string{"me"}})

			t.Run("allowed in connection_init", func(t *testing.T) {
				e.fake.ResetRequests()
				e.connect(t, p.name, `{"headers":{"x-hasura-role":"me"}}`)
				if s := e.session(t, 0); s.Role != "me" {
					t.Errorf("upstream role = %q; want me", s.Role)
				}
			})
			t.Run("allowed on the upgrade", func(t *testing.T) {
				e.fake.ResetRequests()
				c := e.dial(t, http.Header{"X-Hasura-Role": {"me"}}, p.name)
				wsSend(t, c, initMessage(""))
				wsExpect(t, c, "connection_ack")
				s := e.session(t, 0)
				if s.Role != "me" || s.UpgradeHeader.Get("X-Hasura-Role") != "" {
					t.Errorf("upstream role = %q, upgrade X-Hasura-Role %q; want me in connection_init only", s.Role, s.UpgradeHeader.Get("X-Hasura-Role"))
				}
			})
			t.Run("refused in connection_init", func(t *testing.T) {
				e.fake.ResetRequests()
				c := e.dial(t, nil, p.name)
				wsSend(t, c, initMessage(`{"headers":{"X-Hasura-Role":"admin"}}`))
				if ce := wsCloseOf(t, c); ce.Code != closeForbidden {
					t.Errorf("close = %v; want 4403", ce)
				}
				if s := e.session(t, 0); s.InitReceived {
					t.Errorf("upstream received connection_init %s; want it never forwarded", s.InitPayload)
				}
			})
			t.Run("refused on the upgrade", func(t *testing.T) {
				e.fake.ResetRequests()
				_, resp, err := e.tryDial("/v1/graphql", websocket.DialOptions{
					HTTPHeader: http.Header{"X-Hasura-Role": {"admin"}}, Subprotocols: []string{p.name}})
				if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("upgrade with a refused role: %v, %v; want 403", err, resp)
				}
				if n := len(e.fake.WSSessions()); n != 0 {
					t.Errorf("upstream saw %d WebSocket connections; want none", n)
				}
			})
		})
	}
}

// rawUpgrade performs a handshake with exactly the given Sec-WebSocket-Protocol header
// lines and returns the response; the connection is closed at once.
func rawUpgrade(t *testing.T, addr string, protoLines []string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(failAfter))
	var b strings.Builder
	b.WriteString("GET /v1/graphql HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	for _, l := range protoLines {
		b.WriteString("Sec-WebSocket-Protocol: " + l + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	return resp
}

func TestWebSocketSubprotocolNegotiation(t *testing.T) {
	tests := []struct {
		name       string
		offered    []string // Sec-WebSocket-Protocol header lines
		wantClient []string // answered to the client
		wantUp     string   // offered upstream (the only value)
	}{
		{"graphql-transport-ws alone", []string{"graphql-transport-ws"}, []string{"graphql-transport-ws"}, protoTransportWS},
		{"graphql-transport-ws among others, one header", []string{"graphql-ws, graphql-transport-ws"}, []string{"graphql-transport-ws"}, protoTransportWS},
		{"graphql-transport-ws among others, two headers", []string{"graphql-ws", "graphql-transport-ws"}, []string{"graphql-transport-ws"}, protoTransportWS},
		{"Apollo only", []string{"graphql-ws"}, []string{"graphql-ws"}, protoApollo},
		{"none", nil, nil, protoApollo},
		{"an unknown one", []string{"chat"}, nil, protoApollo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{})
			resp := rawUpgrade(t, e.srv.Listener.Addr().String(), tt.offered)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("handshake status = %d; want 101", resp.StatusCode)
			}
			if got := resp.Header.Values("Sec-WebSocket-Protocol"); !cmp.Equal(got, tt.wantClient, cmp.Comparer(func(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") })) {
				t.Errorf("client was answered with subprotocol %q; want %q", got, tt.wantClient)
			}
			s := e.session(t, 0)
			if !cmp.Equal(s.OfferedProtocols, []string{tt.wantUp}) || s.Subprotocol != tt.wantUp {
				t.Errorf("upstream was offered %q and chose %q; want exactly %q", s.OfferedProtocols, s.Subprotocol, tt.wantUp)
			}
		})
	}
}

func TestWebSocketDataFlowsBothWays(t *testing.T) {
	for _, p := range wsProtos {
		t.Run(p.name, func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{})
			c := e.connect(t, p.name, "")
			if d := e.waitDelta(t); d != 1 || e.gauge.Load() != 1 {
				t.Fatalf("OnWebSocket(%d), gauge %d after connecting; want +1, 1", d, e.gauge.Load())
			}
			wsSend(t, c, subscribeMessage(p, "s1", "subscription { tick }"))
			for want := 1; want <= 3; want++ {
				m := wsExpect(t, c, p.data)
				var payload struct {
					Data struct{ Tick int } `json:"data"`
				}
				if err := json.Unmarshal(m.Payload, &payload); err != nil || m.ID != "s1" || payload.Data.Tick != want {
					t.Fatalf("data message %+v; want id s1, tick %d", m, want)
				}
			}
			if p.name == protoTransportWS {
				wsSend(t, c, `{"type":"ping","payload":{"n":42}}`)
				if m := wsExpect(t, c, "pong"); string(m.Payload) != `{"n":42}` {
					t.Errorf("pong payload = %s; want {\"n\":42}", m.Payload)
				}
			}
			wsSend(t, c, `{"id":"s1","type":"`+p.stop+`"}`)
			if p.name == protoApollo {
				wsExpect(t, c, "complete")
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("client close: %v", err)
			}
			if d := e.waitDelta(t); d != -1 || e.gauge.Load() != 0 {
				t.Fatalf("OnWebSocket(%d), gauge %d after closing; want -1, 0", d, e.gauge.Load())
			}
		})
	}
}

func TestWebSocketLargeMessages(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	t.Run("graphql-transport-ws ping and pong of 1 MiB", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{})
		c := e.connect(t, protoTransportWS, "")
		wsSend(t, c, `{"type":"ping","payload":{"big":"`+big+`"}}`)
		m := wsExpect(t, c, "pong")
		if len(m.Payload) != len(`{"big":""}`)+len(big) {
			t.Fatalf("pong payload has %d bytes; want the 1 MiB ping payload back", len(m.Payload))
		}
	})
	t.Run("graphql-ws start of 1 MiB", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{})
		c := e.connect(t, protoApollo, "")
		wsSend(t, c, subscribeMessage(wsProtos[1], "big", "subscription { tick } # "+big))
		if m := wsExpect(t, c, "data"); m.ID != "big" {
			t.Fatalf("data for %q; want big", m.ID)
		}
	})
}

func TestWebSocketClosesWith1012WhenTheTokenIsRenewed(t *testing.T) {
	for _, p := range wsProtos {
		t.Run(p.name, func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{})
			c := e.connect(t, p.name, "")
			old := e.tokens.current()
			wsSend(t, c, subscribeMessage(p, "s1", "subscription { tick }"))
			wsExpect(t, c, p.data)

			fresh := e.tokens.renew(t)
			ce := wsCloseOf(t, c)
			if ce.Code != websocket.StatusServiceRestart || ce.Reason != reasonTokenRenewed {
				t.Fatalf("close = %v; want 1012 %q", ce, reasonTokenRenewed)
			}

			c2 := e.connect(t, p.name, "")
			wsSend(t, c2, subscribeMessage(p, "s1", "subscription { tick }"))
			wsExpect(t, c2, p.data)
			headers, _ := initHeadersOf(t, e.session(t, 1).InitPayload)
			if got := headers["Authorization"]; got != "Bearer "+fresh || fresh == old {
				t.Errorf("reconnect sent Authorization %.20q…; want the renewed token", got)
			}
		})
	}
}

func TestWebSocketClosesWith1012BeforeTheTokenExpires(t *testing.T) {
	for _, p := range wsProtos {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			// 4 s tokens: usable until 0.4 s before exp, when Hasura drops the socket.
			e := newWSEnv(t, dxtratest.Options{AccessTokenTTL: 4 * time.Second}, Options{})
			c := e.connect(t, p.name, "")
			exp := jwtExp(e.tokens.current())
			wsSend(t, c, subscribeMessage(p, "s1", "subscription { tick }"))
			wsExpect(t, c, p.data)

			ce := wsCloseOf(t, c)
			closedAt := time.Now()
			if ce.Code != websocket.StatusServiceRestart || ce.Reason != reasonTokenExpiring {
				t.Fatalf("close = %v; want 1012 %q", ce, reasonTokenExpiring)
			}
			if !closedAt.Before(exp) {
				t.Errorf("closed at %v, after the token's exp %v", closedAt, exp)
			}
			deadline := time.Now().Add(failAfter)
			for !e.session(t, 0).Closed && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // the upstream's state is behind a socket
			}
			if s := e.session(t, 0); s.Expired || !s.Closed {
				t.Errorf("upstream session closed = %v, dropped at exp = %v; want closed by the proxy before exp", s.Closed, s.Expired)
			}

			// The reconnect gets a fresh token (the old one is past its usable end).
			c2 := e.connect(t, p.name, "")
			wsSend(t, c2, subscribeMessage(p, "s1", "subscription { tick }"))
			wsExpect(t, c2, p.data)
			if s := e.session(t, 1); !s.Authenticated || !jwtExp(e.tokens.current()).After(exp) {
				t.Errorf("reconnect authenticated = %v with a token expiring %v; want a newer token than %v", s.Authenticated, jwtExp(e.tokens.current()), exp)
			}
		})
	}
}

func TestWebSocketUpstreamVanishingBecomes1012(t *testing.T) {
	for _, p := range wsProtos {
		t.Run(p.name, func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{})
			c := e.connect(t, p.name, "")
			e.fake.Close() // tears the socket down without a close frame
			ce := wsCloseOf(t, c)
			if ce.Code != websocket.StatusServiceRestart || ce.Reason != reasonUpstreamLost {
				t.Fatalf("close = %v; want 1012 %q", ce, reasonUpstreamLost)
			}
		})
	}
}

func TestWebSocketPassesHasuraCloseCodes(t *testing.T) {
	tests := []struct {
		name       string
		proto      wsProto
		revoke     bool     // the token is revoked before connection_init
		after      []string // messages sent after the ack
		wantMsg    string   // a message expected before the close
		wantCode   websocket.StatusCode
		wantReason string
	}{
		{name: "4409 duplicate subscription id", proto: wsProtos[0],
			after:    []string{subscribeMessage(wsProtos[0], "1", "subscription { tick }"), subscribeMessage(wsProtos[0], "1", "subscription { tick }")},
			wantCode: 4409, wantReason: "Subscriber for 1 already exists"},
		{name: "4403 connection_init refused (graphql-transport-ws)", proto: wsProtos[0], revoke: true,
			wantCode: 4403, wantReason: "Forbidden"},
		{name: "connection_error and 4400 (Apollo)", proto: wsProtos[1], revoke: true,
			wantMsg: "connection_error", wantCode: 4400},
		{name: "1000 after connection_terminate (Apollo)", proto: wsProtos[1],
			after: []string{`{"type":"connection_terminate"}`}, wantCode: websocket.StatusNormalClosure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{})
			c := e.dial(t, nil, tt.proto.name)
			if tt.revoke {
				jwt, _, err := e.tokens.Token(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				e.fake.RevokeAccessToken(jwt)
			}
			wsSend(t, c, initMessage(""))
			if !tt.revoke {
				wsExpect(t, c, "connection_ack")
			}
			for _, m := range tt.after {
				wsSend(t, c, m)
			}
			if tt.wantMsg != "" {
				wsExpect(t, c, tt.wantMsg)
			}
			ce := wsCloseOf(t, c)
			if ce.Code != tt.wantCode || tt.wantReason != "" && ce.Reason != tt.wantReason {
				t.Fatalf("close = %v; want %d %q", ce, tt.wantCode, tt.wantReason)
			}
			if s := e.session(t, 0); s.CloseCode != int(tt.wantCode) {
				t.Errorf("upstream closed with %d; the client got %d", s.CloseCode, ce.Code)
			}
		})
	}
}

func TestWebSocketFirstMessage(t *testing.T) {
	for _, p := range wsProtos {
		t.Run(p.name+"/subscribe before connection_init", func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{})
			c := e.dial(t, nil, p.name)
			wsSend(t, c, subscribeMessage(p, "1", "subscription { tick }"))
			if ce := wsCloseOf(t, c); ce.Code != closeUnauthorized || ce.Reason != errInitFirst.reason {
				t.Fatalf("close = %v; want 4401 %q", ce, errInitFirst.reason)
			}
			if s := e.session(t, 0); s.CloseCode != 0 {
				t.Errorf("upstream closed with %d: it received the unauthenticated message", s.CloseCode)
			}
		})
		t.Run(p.name+"/binary connection_init", func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{})
			c := e.dial(t, nil, p.name)
			ctx, cancel := context.WithTimeout(context.Background(), failAfter)
			defer cancel()
			if err := c.Write(ctx, websocket.MessageBinary, []byte(initMessage(""))); err != nil {
				t.Fatal(err)
			}
			if ce := wsCloseOf(t, c); ce.Code != closeBadRequest {
				t.Fatalf("close = %v; want 4400", ce)
			}
		})
	}
	t.Run("graphql-transport-ws ping before connection_init", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{})
		c := e.dial(t, nil, protoTransportWS)
		wsSend(t, c, `{"type":"ping"}`)
		wsExpect(t, c, "pong")
		wsSend(t, c, initMessage(""))
		wsExpect(t, c, "connection_ack")
	})
}

func TestWebSocketGuards(t *testing.T) {
	tests := []struct {
		name     string
		origin   string
		host     string
		wantCode string
	}{
		{name: "cross-site Origin", origin: "https://evil.example", wantCode: CodeOriginNotAllowed},
		{name: "null Origin", origin: "null", wantCode: CodeOriginNotAllowed},
		{name: "rebound Host", host: "evil.example", wantCode: CodeHostNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newWSEnv(t, dxtratest.Options{}, Options{AllowedOrigins: []string{"https://app.example"}})
			opts := websocket.DialOptions{Host: tt.host, Subprotocols: []string{protoTransportWS}}
			if tt.origin != "" {
				opts.HTTPHeader = http.Header{"Origin": {tt.origin}}
			}
			_, resp, err := e.tryDial("/v1/graphql", opts)
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("upgrade: %v, %+v; want 403", err, resp)
			}
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), `"code":"`+tt.wantCode+`"`) {
				t.Errorf("body = %s; want code %s", body, tt.wantCode)
			}
			if n := e.fake.Calls(dxtratest.GraphQL); n != 0 {
				t.Errorf("upstream received %d requests; want none", n)
			}
		})
	}
	t.Run("allowed Origin", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{AllowedOrigins: []string{"https://app.example"}})
		c, _, err := e.tryDial("/v1/graphql", websocket.DialOptions{
			HTTPHeader: http.Header{"Origin": {"https://app.example"}}, Subprotocols: []string{protoTransportWS}})
		if err != nil {
			t.Fatalf("upgrade from an allowed origin: %v", err)
		}
		defer c.CloseNow()
		wsSend(t, c, initMessage(""))
		wsExpect(t, c, "connection_ack")
		if o := e.session(t, 0).UpgradeHeader.Values("Origin"); len(o) != 0 {
			t.Errorf("upstream upgrade carried Origin %q; want none", o)
		}
	})
}

func TestWebSocketUpgradeRefusedUpstream(t *testing.T) {
	t.Run("Hasura's 404 for a path it does not serve over WebSocket", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{})
		_, resp, err := e.tryDial("/v1/query", websocket.DialOptions{Subprotocols: []string{protoTransportWS}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("upgrade: %v, %+v; want 404", err, resp)
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), `"not-found"`) {
			t.Errorf("body = %s; want Hasura's not-found error", body)
		}
	})
	t.Run("503 with Retry-After", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{})
		e.fake.FailNext(dxtratest.GraphQL, 1, http.StatusServiceUnavailable, "7")
		_, resp, err := e.tryDial("/v1/graphql", websocket.DialOptions{Subprotocols: []string{protoTransportWS}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "7" {
			t.Fatalf("upgrade: %v, %+v; want 503 with Retry-After 7", err, resp)
		}
	})
}

func TestWebSocketWithoutTokenAnswers503(t *testing.T) {
	e := newWSEnv(t, dxtratest.Options{}, Options{TokenWait: 100 * time.Millisecond})
	e.tokens.setDown(true)
	_, resp, err := e.tryDial("/v1/graphql", websocket.DialOptions{Subprotocols: []string{protoTransportWS}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade without a token: %v, %+v; want 503", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), CodeTokenUnavailable) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("503 body %s, Retry-After %q; want token-unavailable with Retry-After", body, resp.Header.Get("Retry-After"))
	}
	if n := len(e.fake.WSSessions()); n != 0 {
		t.Errorf("upstream saw %d WebSocket connections; want none", n)
	}
}

func TestWebSocketShutdown(t *testing.T) {
	t.Run("closes with 1001 and waits", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{})
		var conns []*websocket.Conn
		for _, p := range wsProtos {
			c := e.connect(t, p.name, "")
			wsSend(t, c, subscribeMessage(p, "s1", "subscription { tick }"))
			wsExpect(t, c, p.data)
			conns = append(conns, c)
		}
		closes := make(chan websocket.CloseError, len(conns))
		for _, c := range conns {
			go func() {
				for {
					ctx, cancel := context.WithTimeout(context.Background(), failAfter)
					_, _, err := c.Read(ctx)
					cancel()
					if err != nil {
						var ce websocket.CloseError
						errors.As(err, &ce)
						closes <- ce
						return
					}
				}
			}()
		}
		ctx, cancel := context.WithTimeout(context.Background(), failAfter)
		defer cancel()
		if err := e.h.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown() = %v; want nil", err)
		}
		if g := e.gauge.Load(); g != 0 {
			t.Errorf("gauge after Shutdown = %d; want 0", g)
		}
		for range conns {
			if ce := <-closes; ce.Code != websocket.StatusGoingAway {
				t.Errorf("client close = %v; want 1001", ce)
			}
		}
		_, resp, err := e.tryDial("/v1/graphql", websocket.DialOptions{Subprotocols: []string{protoTransportWS}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("upgrade after Shutdown: %v, %+v; want 503", err, resp)
		}
	})
	t.Run("bounded by its context", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{})
		// This client never reads, so it never answers the close frame.
		e.connect(t, protoTransportWS, "")
		e.waitDelta(t)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := e.h.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown() = %v; want the context's deadline", err)
		}
		// Cut means at once: without the cut, the relay would wait out the library's
		// 5 s close handshake with this client.
		select {
		case d := <-e.deltas:
			if d != -1 {
				t.Fatalf("OnWebSocket(%d) after the cut; want -1", d)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the connection outlived Shutdown's context by 3 s")
		}
	})
	t.Run("no connections", func(t *testing.T) {
		e := newWSEnv(t, dxtratest.Options{}, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := e.h.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown() with no connections = %v; want nil", err)
		}
	})
}

// closeRecorder is an upstream that accepts WebSockets and reports the close each one
// receives.
func closeRecorder(t *testing.T) (*url.URL, <-chan websocket.CloseError) {
	t.Helper()
	got := make(chan websocket.CloseError, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protoTransportWS}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			_, msg, err := c.Read(r.Context())
			if err != nil {
				var ce websocket.CloseError
				errors.As(err, &ce)
				got <- ce
				return
			}
			if strings.Contains(string(msg), "connection_init") {
				_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"connection_ack"}`))
			}
		}
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u, got
}

func TestWebSocketClientCloseReachesUpstream(t *testing.T) {
	up, got := closeRecorder(t)
	e := newWSEnv(t, dxtratest.Options{}, Options{Upstream: up})
	c := e.connect(t, protoTransportWS, "")
	if err := c.Close(4000, "bye"); err != nil {
		t.Fatalf("client close: %v", err)
	}
	select {
	case ce := <-got:
		if ce.Code != 4000 || ce.Reason != "bye" {
			t.Fatalf("upstream got close %v; want 4000 bye", ce)
		}
	case <-time.After(failAfter):
		t.Fatal("upstream saw no close")
	}
}
