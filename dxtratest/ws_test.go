package dxtratest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

var protocols = []string{dxtratest.ProtocolGraphQLTransportWS, dxtratest.ProtocolApollo}

func wsURL(s *dxtratest.Server, path string) string {
	return "ws" + strings.TrimPrefix(s.APIURL, "http") + path
}

// dialWS opens a WebSocket offering proto; the connection is closed at cleanup.
func dialWS(t *testing.T, s *dxtratest.Server, proto string, header http.Header) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(s, "/v1/graphql"), &websocket.DialOptions{
		Subprotocols: []string{proto},
		HTTPHeader:   header,
	})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != proto || c.Subprotocol() != proto {
		t.Fatalf("subprotocol = %q; want %q", got, proto)
	}
	return c
}

func wsSend(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("Write(%s): %v", msg, err)
	}
}

// wsRead reads one message; it returns the error instead when the connection ends.
func wsRead(t *testing.T, c *websocket.Conn) (map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s is not JSON: %v", b, err)
	}
	return m, nil
}

func mustRead(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	m, err := wsRead(t, c)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return m
}

func initMsg(headers map[string]string) string {
	b, _ := json.Marshal(map[string]any{"type": "connection_init", "payload": map[string]any{"headers": headers}})
	return string(b)
}

func opMsgs(proto string) (start, data, stop string) {
	if proto == dxtratest.ProtocolGraphQLTransportWS {
		return "subscribe", "next", "complete"
	}
	return "start", "data", "stop"
}

func TestWSSubscriptionFlow(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			s := newServer(t, dxtratest.Options{TickInterval: 5 * time.Millisecond})
			tok := accessToken(t, s)
			c := dialWS(t, s, proto, nil)
			init := `{"type":"connection_init","payload":{"headers":{"Authorization":"Bearer ` + tok + `","X-Hasura-Role":"me"},"extra":1}}`
			wsSend(t, c, init)
			if m := mustRead(t, c); m["type"] != "connection_ack" {
				t.Fatalf("first message = %v; want connection_ack", m)
			}
			start, dataType, stop := opMsgs(proto)
			wsSend(t, c, `{"id":"1","type":"`+start+`","payload":{"query":"subscription { tick }"}}`)
			for want := 1.0; want <= 3; want++ {
				m := mustRead(t, c)
				got := m["payload"].(map[string]any)["data"].(map[string]any)["tick"]
				if m["type"] != dataType || m["id"] != "1" || got != want {
					t.Fatalf("message = %v; want %s id 1 tick %v", m, dataType, want)
				}
			}
			wsSend(t, c, `{"id":"1","type":"`+stop+`"}`)
			if proto == dxtratest.ProtocolApollo {
				for m := mustRead(t, c); m["type"] != "complete"; m = mustRead(t, c) {
					if m["type"] != "data" {
						t.Fatalf("after stop got %v; want data then complete", m)
					}
				}
			} else {
				wsSend(t, c, `{"type":"ping","payload":{"k":"v"}}`)
				for m := mustRead(t, c); m["type"] != "pong"; m = mustRead(t, c) {
					if m["type"] != "next" {
						t.Fatalf("after complete got %v; want next then pong", m)
					}
				}
			}
			// The id is free again: reusing it is not a duplicate.
			wsSend(t, c, `{"id":"1","type":"`+start+`","payload":{"query":"subscription { dataControllers { id title } }"}}`)
			m := mustRead(t, c)
			rows := m["payload"].(map[string]any)["data"].(map[string]any)["dataControllers"].([]any)
			if m["type"] != dataType || len(rows) != len(dxtratest.SampleDataControllers) {
				t.Fatalf("dataControllers message = %v; want %d rows", m, len(dxtratest.SampleDataControllers))
			}
			wsSend(t, c, `{"id":"1","type":"`+stop+`"}`)
			// A one-shot query answers once and completes.
			wsSend(t, c, `{"id":"2","type":"`+start+`","payload":{"query":"{ __typename }"}}`)
			for {
				m := mustRead(t, c)
				if m["id"] != "2" {
					continue // late messages of operation 1
				}
				if m["type"] != dataType {
					t.Fatalf("one-shot answer = %v; want %s", m, dataType)
				}
				if m := mustRead(t, c); m["type"] != "complete" || m["id"] != "2" {
					t.Fatalf("after one-shot answer got %v; want complete", m)
				}
				break
			}

			sessions := s.WSSessions()
			if len(sessions) != 1 {
				t.Fatalf("len(WSSessions()) = %d; want 1", len(sessions))
			}
			ws := sessions[0]
			if ws.Subprotocol != proto || !cmp.Equal(ws.OfferedProtocols, []string{proto}) || ws.UpgradeAuthorization ||
				!ws.InitReceived || !ws.Authenticated || ws.Role != "me" || ws.Path != "/v1/graphql" {
				t.Errorf("session = %+v; want %s, authenticated as me, no upgrade Authorization", ws, proto)
			}
			var want struct {
				Payload json.RawMessage `json:"payload"`
			}
			_ = json.Unmarshal([]byte(init), &want)
			if string(ws.InitPayload) != string(want.Payload) {
				t.Errorf("InitPayload = %s; want %s", ws.InitPayload, want.Payload)
			}
		})
	}
}

func TestWSAuthentication(t *testing.T) {
	type tc struct {
		name      string
		upgrade   func(tok string) http.Header
		init      func(tok string) string
		wantOK    bool
		wantRole  string
		wantError string
	}
	const multi = "Could not verify JWT: Multiple JWTs found"
	tests := []tc{
		{name: "payload", init: func(tok string) string { return initMsg(map[string]string{"Authorization": "Bearer " + tok}) },
			wantOK: true, wantRole: "user"},
		{name: "payload lower-case key", init: func(tok string) string { return initMsg(map[string]string{"authorization": "Bearer " + tok}) },
			wantOK: true, wantRole: "user"},
		{name: "upgrade only", upgrade: func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} },
			init: func(string) string { return `{"type":"connection_init"}` }, wantOK: true, wantRole: "user"},
		{name: "payload role wins over upgrade role",
			upgrade: func(string) http.Header { return http.Header{"X-Hasura-Role": {"admin"}} },
			init: func(tok string) string {
				return initMsg(map[string]string{"Authorization": "Bearer " + tok, "x-hasura-role": "me"})
			},
			wantOK: true, wantRole: "me"},
		{name: "both places", upgrade: func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} },
			init: func(tok string) string { return initMsg(map[string]string{"Authorization": "Bearer " + tok}) }, wantError: multi},
		{name: "none", init: func(string) string { return `{"type":"connection_init","payload":null}` },
			wantError: "Missing 'Authorization' or 'Cookie' header in JWT authentication mode"},
		{name: "role not allowed", init: func(tok string) string {
			return initMsg(map[string]string{"Authorization": "Bearer " + tok, "X-Hasura-Role": "admin"})
		}, wantError: "Your requested role is not in allowed roles"},
		{name: "bad signature", init: func(tok string) string {
			return initMsg(map[string]string{"Authorization": "Bearer " + tok[:len(tok)-4] + "AAAA"})
		}, wantError: "Could not verify JWT: JWSError JWSInvalidSignature"},
	}
	for _, proto := range protocols {
		for _, tc := range tests {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				s := newServer(t, dxtratest.Options{})
				tok := accessToken(t, s)
				var h http.Header
				if tc.upgrade != nil {
					h = tc.upgrade(tok)
				}
				c := dialWS(t, s, proto, h)
				wsSend(t, c, tc.init(tok))
				m, err := wsRead(t, c)
				switch {
				case tc.wantOK:
					if err != nil || m["type"] != "connection_ack" {
						t.Fatalf("answer = %v, %v; want connection_ack", m, err)
					}
				case proto == dxtratest.ProtocolGraphQLTransportWS:
					var ce websocket.CloseError
					if !errors.As(err, &ce) || ce.Code != 4403 || ce.Reason != "Forbidden" {
						t.Fatalf("answer = %v, %v; want close 4403 Forbidden", m, err)
					}
				default:
					if err != nil || m["type"] != "connection_error" || m["payload"] != tc.wantError {
						t.Fatalf("answer = %v, %v; want connection_error %q", m, err, tc.wantError)
					}
					_, err = wsRead(t, c)
					if websocket.CloseStatus(err) != 4400 {
						t.Fatalf("after connection_error: %v; want close 4400", err)
					}
				}
				ws := s.WSSessions()[0]
				if ws.Authenticated != tc.wantOK || ws.Role != tc.wantRole || ws.AuthError != tc.wantError {
					t.Errorf("session authenticated=%v role=%q error=%q; want %v %q %q",
						ws.Authenticated, ws.Role, ws.AuthError, tc.wantOK, tc.wantRole, tc.wantError)
				}
				if ws.UpgradeAuthorization != (h.Get("Authorization") != "") {
					t.Errorf("UpgradeAuthorization = %v; want %v", ws.UpgradeAuthorization, h.Get("Authorization") != "")
				}
			})
		}
	}
}

func TestWSTransportProtocolErrors(t *testing.T) {
	tests := []struct {
		name     string
		msgs     func(tok string) []string
		wantCode websocket.StatusCode
	}{
		{name: "subscribe before init", msgs: func(string) []string {
			return []string{`{"id":"1","type":"subscribe","payload":{"query":"subscription { tick }"}}`}
		}, wantCode: 4401},
		{name: "second init", msgs: func(tok string) []string {
			i := initMsg(map[string]string{"Authorization": "Bearer " + tok})
			return []string{i, i}
		}, wantCode: 4429},
		{name: "duplicate id", msgs: func(tok string) []string {
			sub := `{"id":"7","type":"subscribe","payload":{"query":"subscription { tick }"}}`
			return []string{initMsg(map[string]string{"Authorization": "Bearer " + tok}), sub, sub}
		}, wantCode: 4409},
		{name: "invalid json", msgs: func(string) []string { return []string{`{`} }, wantCode: 4400},
		{name: "unknown type", msgs: func(string) []string { return []string{`{"type":"hello"}`} }, wantCode: 4400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, dxtratest.Options{TickInterval: time.Hour})
			c := dialWS(t, s, dxtratest.ProtocolGraphQLTransportWS, nil)
			for _, m := range tc.msgs(accessToken(t, s)) {
				wsSend(t, c, m)
			}
			for {
				_, err := wsRead(t, c)
				if err != nil {
					if got := websocket.CloseStatus(err); got != tc.wantCode {
						t.Fatalf("connection ended with %v; want close %d", err, tc.wantCode)
					}
					break
				}
			}
			if got := s.WSSessions()[0].CloseCode; got != int(tc.wantCode) {
				t.Errorf("recorded CloseCode = %d; want %d", got, tc.wantCode)
			}
		})
	}
}

func TestWSInitTimeout(t *testing.T) {
	s := newServer(t, dxtratest.Options{InitTimeout: 20 * time.Millisecond})
	c := dialWS(t, s, dxtratest.ProtocolGraphQLTransportWS, nil)
	_, err := wsRead(t, c)
	if websocket.CloseStatus(err) != 4408 {
		t.Fatalf("without connection_init: %v; want close 4408", err)
	}
}

func TestWSDroppedAtExpiryWithoutCloseFrame(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			clk := newClock()
			s := newServer(t, dxtratest.Options{Now: clk.Now, AccessTokenTTL: time.Second, TickInterval: time.Hour})
			tok := accessToken(t, s)
			clk.Add(950 * time.Millisecond) // 50 ms of life left
			c := dialWS(t, s, proto, nil)
			wsSend(t, c, initMsg(map[string]string{"Authorization": "Bearer " + tok}))
			if m := mustRead(t, c); m["type"] != "connection_ack" {
				t.Fatalf("first message = %v; want connection_ack", m)
			}
			_, err := wsRead(t, c)
			var ce websocket.CloseError
			if err == nil || errors.As(err, &ce) || websocket.CloseStatus(err) != -1 {
				t.Fatalf("at expiry: %v; want the connection dropped without a close frame", err)
			}
			ws := s.WSSessions()[0]
			if !ws.Expired || ws.CloseCode != 0 {
				t.Errorf("session Expired=%v CloseCode=%d; want true, 0", ws.Expired, ws.CloseCode)
			}
		})
	}
}

func TestWSApolloConnectionTerminate(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	c := dialWS(t, s, dxtratest.ProtocolApollo, nil)
	wsSend(t, c, initMsg(map[string]string{"Authorization": "Bearer " + accessToken(t, s)}))
	mustRead(t, c)
	wsSend(t, c, `{"type":"connection_terminate"}`)
	if _, err := wsRead(t, c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after connection_terminate: %v; want close 1000", err)
	}
}

func TestWSSubprotocolEchoedWithoutOffer(t *testing.T) {
	tests := []struct {
		name    string
		offered []string
		want    string
	}{
		{"none", nil, dxtratest.ProtocolApollo},
		{"transport alone", []string{"graphql-transport-ws"}, dxtratest.ProtocolGraphQLTransportWS},
		{"comma list", []string{"graphql-transport-ws, graphql-ws"}, dxtratest.ProtocolApollo},
		{"two headers", []string{"graphql-transport-ws", "graphql-transport-ws"}, dxtratest.ProtocolApollo},
		{"case differs", []string{"GraphQL-Transport-WS"}, dxtratest.ProtocolApollo},
		{"other", []string{"chat"}, dxtratest.ProtocolApollo},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, dxtratest.Options{})
			conn, err := net.Dial("tcp", strings.TrimPrefix(s.APIURL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req := "GET /v1/graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			for _, p := range tc.offered {
				req += "Sec-WebSocket-Protocol: " + p + "\r\n"
			}
			if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Values("Sec-WebSocket-Protocol")[0] != tc.want {
				t.Errorf("upgrade = %d, Sec-WebSocket-Protocol %q; want 101 %q", resp.StatusCode, resp.Header.Values("Sec-WebSocket-Protocol"), tc.want)
			}
		})
	}
}

func TestWSUpgradeOnOtherPath(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, wsURL(s, "/v1/query"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("Dial /v1/query: resp %v, err %v; want 404", resp, err)
	}
	if got := s.Calls(dxtratest.GraphQL); got != 1 {
		t.Errorf("Calls(GraphQL) = %d; want 1", got)
	}
}

func TestCloseEndsWebSockets(t *testing.T) {
	s := dxtratest.NewServer(dxtratest.Options{TickInterval: time.Hour})
	defer s.Close()
	c := dialWS(t, s, dxtratest.ProtocolGraphQLTransportWS, nil)
	wsSend(t, c, initMsg(map[string]string{"Authorization": "Bearer " + accessToken(t, s)}))
	mustRead(t, c)
	wsSend(t, c, `{"id":"1","type":"subscribe","payload":{"query":"subscription { tick }"}}`)
	mustRead(t, c)
	s.Close()
	if _, err := wsRead(t, c); err == nil {
		t.Fatal("Read after Close succeeded; want the connection gone")
	}
	if ws := s.WSSessions()[0]; !ws.Closed {
		t.Errorf("session Closed = false after Close")
	}
}
