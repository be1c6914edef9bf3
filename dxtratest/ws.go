package dxtratest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// ProtocolGraphQLTransportWS and ProtocolApollo are the WebSocket subprotocols Hasura speaks.
const (
	ProtocolGraphQLTransportWS = "graphql-transport-ws" // graphql-ws library, the modern protocol
	ProtocolApollo             = "graphql-ws"           // Apollo subscriptions-transport-ws, Hasura's default
)

const wsReadLimit = 16 << 20

// WSSession is one WebSocket connection the API accepted, as recorded by
// Server.WSSessions. It is a snapshot owned by the caller (safe to read from any
// goroutine): fields filled in later (after connection_init, at the end) show up in
// later calls.
type WSSession struct {
	Path                 string
	Subprotocol          string          // the chosen and echoed subprotocol: ProtocolGraphQLTransportWS or ProtocolApollo
	OfferedProtocols     []string        // the Sec-WebSocket-Protocol header values as received
	UpgradeHeader        http.Header     // a clone of the upgrade request's headers
	UpgradeAuthorization bool            // the upgrade request carried an Authorization header
	InitReceived         bool            // a connection_init message arrived
	InitPayload          json.RawMessage // its payload exactly as received; nil when it had none
	Authenticated        bool            // connection_init was accepted (connection_ack sent)
	Role                 string          // the role the connection runs as, once authenticated
	AuthError            string          // Hasura's message when connection_init was refused
	Expired              bool            // the server dropped the connection at the JWT's exp, without a close frame
	CloseCode            int             // the close code the server sent (4400, 4403, 4408, ...); 0 when none
	Closed               bool            // the connection has ended
}

// WSSessions returns snapshots of the WebSocket connections accepted so far, oldest
// first (ResetRequests forgets them).
func (s *Server) WSSessions() []WSSession {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	out := make([]WSSession, len(s.wsSessions))
	for i, ws := range s.wsSessions {
		out[i] = *ws
		out[i].OfferedProtocols = append([]string(nil), ws.OfferedProtocols...)
		out[i].UpgradeHeader = ws.UpgradeHeader.Clone()
		out[i].InitPayload = bytes.Clone(ws.InitPayload)
	}
	return out
}

func (s *Server) updateWS(rec *WSSession, f func(*WSSession)) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	f(rec)
}

func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// chooseSubprotocol picks like Hasura: graphql-transport-ws only when exactly one
// Sec-WebSocket-Protocol header holds exactly that value, else Apollo.
func chooseSubprotocol(h http.Header) string {
	if v := h.Values("Sec-WebSocket-Protocol"); len(v) == 1 && v[0] == ProtocolGraphQLTransportWS {
		return ProtocolGraphQLTransportWS
	}
	return ProtocolApollo
}

func (s *Server) serveWSUpgrade(w http.ResponseWriter, r *http.Request, kind pathKind) {
	s.record(r, nil, s.authenticate(r.Header, s.now()))
	if status, retryAfter, failed := s.countAndFail(GraphQL); failed {
		writeAPIFailure(w, status, retryAfter)
		return
	}
	if kind != kindGraphQL && kind != kindAlpha {
		writeGQErr(w, http.StatusNotFound, "$", "not-found", "resource does not exist")
		return
	}
	proto := chooseSubprotocol(r.Header)
	// Set before Accept: with no Subprotocols option coder/websocket keeps this header, so
	// the choice is echoed even to a client that offered none, as Hasura does.
	w.Header().Set("Sec-WebSocket-Protocol", proto)
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept wrote the answer
	}
	c.SetReadLimit(wsReadLimit)
	rec := &WSSession{
		Path:                 r.URL.Path,
		Subprotocol:          proto,
		OfferedProtocols:     r.Header.Values("Sec-WebSocket-Protocol"),
		UpgradeHeader:        r.Header.Clone(),
		UpgradeAuthorization: len(r.Header.Values("Authorization")) > 0,
	}
	s.recMu.Lock()
	s.wsSessions = append(s.wsSessions, rec)
	s.recMu.Unlock()

	ctx, cancel := context.WithCancel(s.baseCtx)
	conn := &wsConn{s: s, c: c, proto: proto, rec: rec, ctx: ctx, cancel: cancel,
		upgrade: r.Header.Clone(), subs: map[string]*wsSub{}}
	conn.run()
}

// wsConn is one accepted connection. run's goroutine is the only one that reads state
// and decides; a reader goroutine feeds it messages and subscription goroutines write.
type wsConn struct {
	s       *Server
	c       *websocket.Conn
	proto   string
	rec     *WSSession
	ctx     context.Context // cancelling it tears the connection down without a close frame
	cancel  context.CancelFunc
	upgrade http.Header

	initDone bool
	subs     map[string]*wsSub
}

type wsSub struct {
	cancel context.CancelFunc
	done   chan struct{}
}

type wsMsg struct {
	typ  websocket.MessageType
	data []byte
	err  error
}

// wsClient is a client message of either protocol.
type wsClient struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

func (wc *wsConn) run() {
	msgs := make(chan wsMsg, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			typ, data, err := wc.c.Read(wc.ctx)
			select {
			case msgs <- wsMsg{typ, data, err}:
			case <-wc.ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		wc.cancel()
		_ = wc.c.CloseNow()
		for id := range wc.subs {
			wc.stopSub(id)
		}
		<-readerDone
		wc.s.updateWS(wc.rec, func(r *WSSession) { r.Closed = true })
	}()

	var initTimeout <-chan time.Time
	if wc.proto == ProtocolGraphQLTransportWS {
		t := time.NewTimer(wc.s.initTimeout)
		defer t.Stop()
		initTimeout = t.C
	}
	var expiry <-chan time.Time
	for {
		select {
		case <-wc.ctx.Done(): // Server.Close
			return
		case <-initTimeout:
			if !wc.initDone {
				wc.close(4408, "Connection initialisation timeout")
				return
			}
			initTimeout = nil
		case <-expiry:
			// Hasura's tokenExpiryHandler: the connection handler just exits, no message,
			// no close frame.
			wc.s.updateWS(wc.rec, func(r *WSSession) { r.Expired = true })
			return
		case m := <-msgs:
			if m.err != nil {
				return
			}
			exp, keep := wc.handle(m)
			if !keep {
				return
			}
			if !exp.IsZero() {
				t := time.NewTimer(exp.Sub(wc.s.now()))
				defer t.Stop()
				expiry = t.C
			}
		}
	}
}

// close sends a close frame with code and reason and records the code.
func (wc *wsConn) close(code websocket.StatusCode, reason string) {
	if len(reason) > 123 { // the most a close frame can carry
		reason = reason[:123]
	}
	wc.s.updateWS(wc.rec, func(r *WSSession) { r.CloseCode = int(code) })
	_ = wc.c.Close(code, reason)
}

func (wc *wsConn) send(msg []byte) {
	_ = wc.c.Write(wc.ctx, websocket.MessageText, msg)
}

// handle processes one client message. It returns the JWT's expiry when the message
// authenticated the connection, and keep == false when the connection must end.
func (wc *wsConn) handle(m wsMsg) (exp time.Time, keep bool) {
	transport := wc.proto == ProtocolGraphQLTransportWS
	var msg wsClient
	if m.typ != websocket.MessageText && transport || json.Unmarshal(m.data, &msg) != nil {
		if transport {
			wc.close(4400, "Invalid message received")
			return time.Time{}, false
		}
		wc.send(mustJSON(map[string]any{"type": "connection_error", "payload": "parsing ClientMessage failed"}))
		return time.Time{}, true
	}
	switch msg.Type {
	case "connection_init":
		if wc.initDone {
			if transport {
				wc.close(4429, "Too many initialisation requests")
				return time.Time{}, false
			}
			return time.Time{}, true
		}
		return wc.connectionInit(msg.Payload)
	case "ping":
		if transport {
			pong := map[string]any{"type": "pong"}
			if len(msg.Payload) > 0 {
				pong["payload"] = msg.Payload
			}
			wc.send(mustJSON(pong))
		}
	case "pong":
	case "subscribe", "start":
		if !wc.initDone {
			if transport {
				wc.close(4401, "Unauthorized")
				return time.Time{}, false
			}
			wc.sendError(msg.ID, "cannot start as connection_init failed with: connection_init not received")
			return time.Time{}, true
		}
		return time.Time{}, wc.subscribe(msg)
	case "complete", "stop":
		id := string(msg.ID)
		if _, ok := wc.subs[id]; ok {
			wc.stopSub(id)
			if !transport {
				wc.send(wc.frame(msg.ID, "complete", nil))
			}
		}
	case "connection_terminate":
		if !transport {
			wc.close(websocket.StatusNormalClosure, "")
			return time.Time{}, false
		}
		fallthrough
	default:
		if transport {
			wc.close(4400, "Invalid message received")
			return time.Time{}, false
		}
	}
	return time.Time{}, true
}

// connectionInit authenticates like Hasura's onConnInit: payload headers first, then
// the upgrade request's headers.
func (wc *wsConn) connectionInit(payload json.RawMessage) (time.Time, bool) {
	wc.initDone = true
	wc.s.updateWS(wc.rec, func(r *WSSession) {
		r.InitReceived = true
		r.InitPayload = bytes.Clone(payload)
	})
	h := initHeaders(payload, wc.upgrade)
	a := wc.s.authenticate(h, wc.s.now())
	if !a.ok {
		wc.s.updateWS(wc.rec, func(r *WSSession) { r.AuthError = a.message })
		if wc.proto == ProtocolGraphQLTransportWS {
			wc.close(4403, "Forbidden")
			return time.Time{}, false
		}
		wc.send(mustJSON(map[string]any{"type": "connection_error", "payload": a.message}))
		wc.close(4400, string(mustJSON(map[string]string{"server_error_msg": "4400: Connection initialization failed: " + a.message})))
		return time.Time{}, false
	}
	wc.s.updateWS(wc.rec, func(r *WSSession) {
		r.Authenticated = true
		r.Role = a.role
	})
	wc.send([]byte(`{"type":"connection_ack"}`))
	return a.info.exp, true
}

// initHeaders merges connection_init payload.headers (first, names case-insensitive)
// with the upgrade request's headers, as Hasura's mkHeaders does.
func initHeaders(payload json.RawMessage, upgrade http.Header) http.Header {
	h := http.Header{}
	var p struct {
		Headers map[string]any `json:"headers"`
	}
	if json.Unmarshal(payload, &p) == nil {
		for k, v := range p.Headers {
			if sv, ok := v.(string); ok {
				h.Add(k, sv) // Add canonicalises the name
			}
		}
	}
	for k, vs := range upgrade {
		switch k {
		case "Sec-Websocket-Key", "Sec-Websocket-Version", "Upgrade", "Connection":
			continue
		}
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	return h
}

// frame renders a server message {"id":..,"type":..,"payload":..}.
func (wc *wsConn) frame(id json.RawMessage, typ string, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":`)
	if len(id) == 0 {
		b.WriteString("null")
	} else {
		b.Write(id)
	}
	b.WriteString(`,"type":"`)
	b.WriteString(typ)
	b.WriteByte('"')
	if payload != nil {
		b.WriteString(`,"payload":`)
		b.Write(payload)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func (wc *wsConn) sendError(id json.RawMessage, message string) {
	e := map[string]any{"extensions": map[string]any{"path": "$", "code": "start-failed"}, "message": message}
	if wc.proto == ProtocolGraphQLTransportWS {
		wc.send(wc.frame(id, "error", mustJSON([]any{e})))
		return
	}
	wc.send(wc.frame(id, "error", mustJSON(e)))
}

// subscribe starts an operation: dataControllers and tick subscriptions send data every
// tick until stopped; other documents get one answer (data then complete, or an error).
func (wc *wsConn) subscribe(msg wsClient) bool {
	transport := wc.proto == ProtocolGraphQLTransportWS
	id := string(msg.ID)
	if _, dup := wc.subs[id]; dup {
		if transport {
			wc.close(4409, "Subscriber for "+strings.Trim(id, `"`)+" already exists")
			return false
		}
		wc.sendError(msg.ID, "an operation already exists with this id: "+strings.Trim(id, `"`))
		return true
	}
	var p struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(msg.Payload, &p)
	dataType := "next"
	if !transport {
		dataType = "data"
	}
	var next func(n int) []byte
	switch {
	case strings.Contains(p.Query, "dataControllers"):
		next = func(int) []byte { return dataControllersBody }
	case strings.Contains(p.Query, "tick"):
		next = func(n int) []byte { return []byte(`{"data":{"tick":` + strconv.Itoa(n) + `}}`) }
	default:
		code, result := answerQuery(p.Query)
		switch {
		case code == "":
			wc.send(wc.frame(msg.ID, dataType, []byte(result)))
			wc.send(wc.frame(msg.ID, "complete", nil))
		case transport:
			wc.send(wc.frame(msg.ID, "error", mustJSON([]any{gqlError("$.selectionSet", code, result)})))
		default:
			wc.send(wc.frame(msg.ID, "data", mustJSON(map[string]any{"errors": []any{gqlError("$.selectionSet", code, result)}})))
		}
		return true
	}
	ctx, cancel := context.WithCancel(wc.ctx)
	sub := &wsSub{cancel: cancel, done: make(chan struct{})}
	wc.subs[id] = sub
	rawID := bytes.Clone(msg.ID)
	go func() {
		defer close(sub.done)
		t := time.NewTicker(wc.s.tick)
		defer t.Stop()
		for n := 1; ; n++ {
			// Writes use the connection's context: cancelling a write's context would
			// tear the whole connection down.
			if err := wc.c.Write(wc.ctx, websocket.MessageText, wc.frame(rawID, dataType, next(n))); err != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return true
}

// stopSub ends a subscription and waits until its goroutine has sent its last message,
// so that nothing follows the client's complete/stop once a later message is answered.
func (wc *wsConn) stopSub(id string) {
	sub := wc.subs[id]
	sub.cancel()
	<-sub.done
	delete(wc.subs, id)
}

func gqlError(path, code, message string) map[string]any {
	return map[string]any{"extensions": map[string]any{"path": path, "code": code}, "message": message}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(errors.New("dxtratest: " + err.Error()))
	}
	return b
}
