package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// The WebSocket relay (SPEC behaviour 12): GraphQL subscriptions.
//
// ServeHTTP hands serveWebSocket the upgrade requests that passed every guard (Host,
// Origin, the upgrade's own X-Hasura-Role), with the role chosen. The relay then
//
//  1. waits (up to TokenWait) until a token is held, else answers 503 without
//     upgrading;
//  2. dials the upstream first — same URL as an HTTP request, the caller's headers
//     cleaned and no Authorization at all, exactly one subprotocol offered — and passes
//     a refusal (its status, a GraphQL-shaped error) to the client without upgrading;
//  3. accepts the client, answering with the upstream's subprotocol when the client
//     offered it;
//  4. reads client messages until connection_init (graphql-transport-ws ping/pong may
//     come before it and pass; anything else closes the socket), rewrites it with the
//     current token (rewriteConnectionInit) and forwards it; from then on it relays
//     whole messages both ways without looking at them;
//  5. closes the client with 1012 once the token source holds a newer token than the
//     connection's, or at the latest when the connection's token reaches its usable
//     end, and passes every other ending on: the upstream's close code to the client, an
//     upstream that vanished as 1012, the client's close code to the upstream.
//
// Each connection runs three goroutines: the handler's (serveWebSocket, which decides
// how the connection ends and performs the closes), one reading the client and one
// reading the upstream. The readers only report; the handler's goroutine acts on the
// first report, closes both sides and waits for both readers before it returns.

// WebSocket subprotocols (PROTOCOL §6).
const (
	protoTransportWS = "graphql-transport-ws" // the graphql-ws library's protocol
	protoApollo      = "graphql-ws"           // Apollo subscriptions-transport-ws, Hasura's default
)

// wsReadLimit is the largest message relayed in either direction (coder/websocket's
// default is 32 KiB); a larger one ends the connection with 1009.
const wsReadLimit = 16 << 20

// wsKeepBuffer is the largest relay buffer kept between messages; a larger one (left
// by a large message) is dropped so an idle connection does not pin it.
const wsKeepBuffer = 1 << 20

// wsWriteFailureGrace is how long a write failure waits for the reader of the same
// connection to report why (a close frame it received, say) before it is taken as the
// connection being lost.
const wsWriteFailureGrace = 2 * time.Second

// wsTokenCheckWait bounds the Token call made when the token source announces a new
// token (it answers from memory then).
const wsTokenCheckWait = time.Second

// Close codes the relay sends itself, besides the standard ones.
const (
	closeBadRequest   websocket.StatusCode = 4400 // the first message is not a usable connection_init
	closeUnauthorized websocket.StatusCode = 4401 // a message other than connection_init came first
	closeForbidden    websocket.StatusCode = 4403 // the connection_init chose a role outside the allow-list
)

// Close reasons the client sees (at most 123 bytes each).
const (
	reasonTokenRenewed     = "access token renewed: reconnect"
	reasonTokenExpiring    = "access token expiring: reconnect"
	reasonUpstreamLost     = "upstream connection lost: reconnect"
	reasonShutdown         = "proxy shutting down"
	reasonTokenUnavailable = "no access token available: reconnect later"
	reasonMessageTooBig    = "message larger than 16 MiB"
	reasonClientGone       = "client went away"
)

// codeShuttingDown and codeUpgradeRefused are the codes of the proxy's own HTTP errors
// on the WebSocket path, besides those of SPEC behaviour 8.
const (
	codeShuttingDown   = "shutting-down"
	codeUpgradeRefused = "websocket-upgrade-refused"
)

var (
	errWSShuttingDown = &guardError{http.StatusServiceUnavailable, codeShuttingDown, "the proxy is shutting down; reconnect shortly"}
	errWSHandshake    = &guardError{http.StatusBadRequest, CodeBadRequest, "not a valid WebSocket handshake (GET with Connection: Upgrade, Sec-WebSocket-Version: 13 and one Sec-WebSocket-Key)"}
	errWSUpstreamBad  = errors.New("proxy: the upstream answered the websocket handshake incorrectly")
)

// wsState is the WebSocket relay's state inside Handler. Its methods are safe for
// concurrent use.
type wsState struct {
	mu      sync.Mutex
	closing bool                  // Shutdown was called: no new connection starts
	active  int                   // connections between enter and leave
	drained chan struct{}         // closed when closing and active reaches 0
	soft    context.Context       // cancelled by Shutdown: connections close with 1001
	hard    context.Context       // cancelled when Shutdown's ctx ends: everything is cut
	stop    [2]context.CancelFunc // cancel soft, hard
	count   int                   // open (upgraded) connections, for the log
	onCount func(int)
}

// initWebSocket prepares h.ws; New calls it once, after every other field is set.
func (h *Handler) initWebSocket() error {
	s := &h.ws
	s.soft, s.stop[0] = context.WithCancel(context.Background())
	s.hard, s.stop[1] = context.WithCancel(context.Background())
	s.onCount = h.onWebSocket
	s.drained = make(chan struct{})
	return nil
}

// enter registers a connection attempt; false once Shutdown has begun.
func (s *wsState) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.active++
	return true
}

// leave ends what enter began.
func (s *wsState) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.closing && s.active == 0 {
		close(s.drained)
	}
}

// opened and closed count upgraded connections and report them to OnWebSocket.
func (s *wsState) opened() {
	s.mu.Lock()
	s.count++
	s.mu.Unlock()
	if s.onCount != nil {
		s.onCount(1)
	}
}

func (s *wsState) closed() {
	s.mu.Lock()
	s.count--
	s.mu.Unlock()
	if s.onCount != nil {
		s.onCount(-1)
	}
}

// Shutdown closes every proxied WebSocket with 1001 (going away) and waits, bounded
// by ctx, until they are gone; a no-op when there are none. Upgrades arriving after it
// began get 503. When ctx ends first, the remaining connections are cut without a
// close handshake and the error says how many were left. It is safe for concurrent
// use, and may be called more than once.
func (h *Handler) Shutdown(ctx context.Context) error {
	s := &h.ws
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		if s.active == 0 {
			close(s.drained)
		}
	}
	s.mu.Unlock()
	s.stop[0]()
	select {
	case <-s.drained:
		return nil
	default:
	}
	select {
	case <-s.drained:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		left := s.count
		s.mu.Unlock()
		s.stop[1]()
		return fmt.Errorf("proxy: %d websocket connection(s) cut at shutdown: %w", left, ctx.Err())
	}
}

// serveWebSocket relays one WebSocket connection (SPEC behaviour 12). w is the
// request's exchange, which records the status for OnRequestDone.
func (h *Handler) serveWebSocket(w http.ResponseWriter, r *http.Request, role string) {
	s := &h.ws
	if !s.enter() {
		h.fail(w, r, errWSShuttingDown)
		return
	}
	defer s.leave()
	if !validHandshake(r) {
		h.fail(w, r, errWSHandshake)
		return
	}

	// ctx lives as long as the connection; it is cut at once only by a Shutdown whose
	// own ctx ended. pre bounds what happens before the upgrade: it also ends when
	// Shutdown begins.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.hard, cancel)()
	pre, cancelPre := context.WithCancel(ctx)
	defer cancelPre()
	defer context.AfterFunc(s.soft, cancelPre)()

	// A token must be at hand before anything is dialled: while auth is down, clients
	// get an HTTP 503 after the usual wait instead of a socket that closes at once.
	wait, cancelWait := context.WithTimeout(pre, h.tokenWait)
	_, _, err := h.tokens.Token(wait)
	cancelWait()
	if err != nil {
		if s.soft.Err() != nil {
			err = errWSShuttingDown
		} else {
			err = &tokenError{err: err}
		}
		h.fail(w, r, err)
		return
	}

	offered := offeredProtocols(r.Header)
	want := protoApollo
	if containsFold(offered, protoTransportWS) {
		want = protoTransportWS
	}
	target := upstreamURL(h, r)
	upSock := &upgradeCapture{base: h.base}
	up, resp, err := websocket.Dial(pre, target, &websocket.DialOptions{
		HTTPClient: &http.Client{
			Transport:     upSock,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		HTTPHeader:   upgradeHeaders(r.Header),
		Subprotocols: []string{want},
	})
	if err != nil {
		switch {
		case s.soft.Err() != nil:
			h.fail(w, r, errWSShuttingDown)
		case resp != nil && resp.StatusCode >= 400:
			h.upgradeRefused(w, r, resp)
		case resp != nil:
			h.fail(w, r, errWSUpstreamBad)
		default:
			h.fail(w, r, err)
		}
		return
	}
	proto := up.Subprotocol()
	if proto == "" {
		proto = want // the upstream echoed none: it speaks what it was offered
	}
	var answer []string
	if containsFold(offered, proto) {
		answer = []string{proto}
	}
	clientSock := &hijackCapture{ResponseWriter: w}
	client, err := websocket.Accept(clientSock, r, &websocket.AcceptOptions{
		Subprotocols: answer,
		// The guard has checked Origin against DXTRA_ALLOWED_ORIGINS already; the
		// library's own same-host rule would refuse the origins allowed there.
		InsecureSkipVerify: true,
	})
	if err != nil { // Accept has answered the client
		_ = up.CloseNow()
		return
	}
	client.SetReadLimit(wsReadLimit)
	up.SetReadLimit(wsReadLimit)
	s.opened()
	defer s.closed()
	// A cut (Shutdown's ctx ended) closes both sockets under the library, so that
	// even a close handshake in progress with a peer that does not answer ends at once.
	defer context.AfterFunc(s.hard, func() {
		clientSock.close()
		upSock.close()
	})()

	c := &wsConn{
		h: h, client: client, upstream: up, proto: proto, role: role,
		ctx: ctx, events: make(chan wsEvent, 2), authed: make(chan wsAuth, 1),
	}
	if ce := h.log.Check(zap.DebugLevel, "websocket opened"); ce != nil {
		ce.Write(zap.String("path", r.URL.Path), zap.String("subprotocol", proto))
	}
	o := c.run()
	cancel()
	if ce := h.log.Check(zap.DebugLevel, "websocket closed"); ce != nil {
		ce.Write(zap.String("path", r.URL.Path), zap.String("why", o.why),
			zap.Int("client_code", int(o.client)), zap.Int("upstream_code", int(o.upstream)))
	}
}

// validHandshake checks what the relay needs of the client's handshake before it dials
// the upstream (websocket.Accept checks it all again).
func validHandshake(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		headerHasToken(r.Header["Connection"], "upgrade") &&
		len(r.Header["Sec-Websocket-Version"]) == 1 && r.Header.Get("Sec-Websocket-Version") == "13" &&
		len(r.Header["Sec-Websocket-Key"]) == 1
}

// headerHasToken reports whether the comma-separated values list token (ASCII case
// ignored).
func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if asciiEqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// offeredProtocols returns the subprotocols the client offered, from every
// Sec-WebSocket-Protocol header.
func offeredProtocols(h http.Header) []string {
	var out []string
	for _, v := range h["Sec-Websocket-Protocol"] {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if asciiEqualFold(v, s) {
			return true
		}
	}
	return false
}

// upstreamURL is the target of an HTTP request for r: {API_URL}{path}?{query}.
func upstreamURL(h *Handler, r *http.Request) string {
	u := *r.URL
	pr := httputil.ProxyRequest{In: r, Out: &http.Request{URL: &u, Header: http.Header{}}}
	pr.SetURL(h.upstream)
	return pr.Out.URL.String()
}

// wsHandshakeHeaders are set by the WebSocket library for the upstream handshake, or
// are hop-by-hop: the client's values are not copied.
var wsHandshakeHeaders = []string{
	"Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version",
	"Sec-Websocket-Protocol", "Sec-Websocket-Extensions", "Keep-Alive", "Te", "Trailer",
	"Transfer-Encoding", "Proxy-Connection", "Host", "Content-Length",
}

// upgradeHeaders returns the headers of the upstream handshake: the client's, cleaned
// like any request's (SPEC behaviour 2: no credentials, no X-Hasura-*, no Origin, no
// forwarding headers), without hop-by-hop and handshake headers, and — unlike an HTTP
// request — with no Authorization and no X-Hasura-Role: those travel in
// connection_init only.
func upgradeHeaders(in http.Header) http.Header {
	out := in.Clone()
	for _, v := range in["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				out.Del(name)
			}
		}
	}
	for _, name := range wsHandshakeHeaders {
		delete(out, name)
	}
	stripHeaders(out)
	return out
}

// upgradeRefused passes the upstream's refusal of the upgrade to the client: its
// status, its body when that is a complete JSON document (Hasura's own errors are),
// else a GraphQL-shaped error naming the status.
func (h *Handler) upgradeRefused(w http.ResponseWriter, r *http.Request, resp *http.Response) {
	if resp.StatusCode >= 500 {
		h.log.Warn("websocket upgrade refused upstream", zap.Int("status", resp.StatusCode))
	} else if ce := h.log.Check(zap.DebugLevel, "websocket upgrade refused upstream"); ce != nil {
		ce.Write(zap.Int("status", resp.StatusCode))
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	var body []byte
	if resp.Body != nil {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body) // the library kept at most 1 KiB of it
		body = b.Bytes()
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if len(body) > 0 && (mt == "application/json" || mt == graphQLResponseType) && jsonValid(body) {
		hdr := w.Header()
		hdr.Set("Content-Type", resp.Header.Get("Content-Type"))
		hdr.Set("Content-Length", strconv.Itoa(len(body)))
		hdr.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		return
	}
	WriteError(w, r, resp.StatusCode, codeUpgradeRefused,
		fmt.Sprintf("the Dxtra API refused the WebSocket upgrade with HTTP %d", resp.StatusCode))
}

// hijackCapture is the ResponseWriter handed to websocket.Accept: it keeps the
// hijacked connection so that a cut can close it under the library.
type hijackCapture struct {
	http.ResponseWriter
	mu   sync.Mutex
	conn net.Conn
}

func (hc *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(hc.ResponseWriter).Hijack()
	hc.mu.Lock()
	hc.conn = conn
	hc.mu.Unlock()
	return conn, brw, err
}

func (hc *hijackCapture) Unwrap() http.ResponseWriter { return hc.ResponseWriter }

func (hc *hijackCapture) close() {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.conn != nil {
		_ = hc.conn.Close()
	}
}

// upgradeCapture is the RoundTripper of one upstream handshake: the handler's
// transport, keeping the socket of a 101 answer (its body) so that a cut can close it
// under the library.
type upgradeCapture struct {
	base http.RoundTripper
	mu   sync.Mutex
	sock io.Closer
}

func (uc *upgradeCapture) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := uc.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		uc.mu.Lock()
		uc.sock = resp.Body
		uc.mu.Unlock()
	}
	return resp, err
}

func (uc *upgradeCapture) close() {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.sock != nil {
		_ = uc.sock.Close()
	}
}

// wsConn is one relayed connection. Its fields are set before the readers start and
// not changed afterwards.
type wsConn struct {
	h        *Handler
	client   *websocket.Conn
	upstream *websocket.Conn
	proto    string // the subprotocol spoken (the upstream's)
	role     string // the role chosen on the upgrade (DXTRA_ROLE when none)
	ctx      context.Context
	events   chan wsEvent // each reader reports once
	authed   chan wsAuth  // the connection_init went out with this token
}

// wsSide names one of the two connections.
type wsSide uint8

const (
	sideClient wsSide = iota
	sideUpstream
)

// wsEvent is a reader's report: the connection side ended (err says how), or the
// proxy refused the client (refuse).
type wsEvent struct {
	side   wsSide
	err    error
	write  bool     // err came from writing to side, not reading it
	refuse *wsClose // the client is to be closed with this
}

// wsAuth is the token the connection_init was sent with.
type wsAuth struct {
	jwt     string
	until   time.Time
	changed <-chan struct{} // taken before the token
}

// wsClose is a close code and reason the proxy sends the client.
type wsClose struct {
	code   websocket.StatusCode
	reason string
}

func (c *wsClose) Error() string { return fmt.Sprintf("close %d: %s", c.code, c.reason) }

// wsOutcome says how a connection ends: the close frames to send (0: that side is
// already closed or gone) and, for the log, why.
type wsOutcome struct {
	why            string
	client         websocket.StatusCode
	clientReason   string
	upstream       websocket.StatusCode
	upstreamReason string
}

// run relays until one side ends or the proxy ends the connection, closes both sides
// and waits for the readers. It returns how the connection ended.
func (c *wsConn) run() wsOutcome {
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		c.readClient()
	}()
	go func() {
		defer readers.Done()
		c.relay(c.upstream, c.client, sideUpstream, sideClient)
	}()
	o := c.wait()
	c.end(o)
	readers.Wait()
	return o
}

// wait returns the first reason to end the connection.
func (c *wsConn) wait() wsOutcome {
	var (
		jwt      string
		expiry   <-chan time.Time
		changed  <-chan struct{}
		grace    <-chan time.Time
		deferred wsEvent
	)
	for {
		select {
		case a := <-c.authed:
			jwt, changed = a.jwt, a.changed
			if !a.until.IsZero() {
				t := time.NewTimer(time.Until(a.until))
				defer t.Stop()
				expiry = t.C
			}
		case <-changed:
			next := c.h.tokens.Changed()
			tctx, cancel := context.WithTimeout(c.ctx, wsTokenCheckWait)
			cur, _, err := c.h.tokens.Token(tctx)
			cancel()
			if err == nil && cur != jwt {
				return wsOutcome{why: "token_renewed", client: websocket.StatusServiceRestart, clientReason: reasonTokenRenewed, upstream: websocket.StatusNormalClosure}
			}
			changed = next
		case <-expiry:
			return wsOutcome{why: "token_expiring", client: websocket.StatusServiceRestart, clientReason: reasonTokenExpiring, upstream: websocket.StatusNormalClosure}
		case <-c.h.ws.soft.Done():
			return wsOutcome{why: "shutdown", client: websocket.StatusGoingAway, clientReason: reasonShutdown, upstream: websocket.StatusGoingAway, upstreamReason: reasonShutdown}
		case <-c.ctx.Done():
			return wsOutcome{why: "cut"}
		case <-grace:
			return outcomeOf(deferred)
		case ev := <-c.events:
			if ev.write && ev.refuse == nil {
				// The reader of that side will most likely tell why in a moment (a
				// close frame with a code to pass on); wait a little for it.
				if grace == nil {
					deferred = ev
					t := time.NewTimer(wsWriteFailureGrace)
					defer t.Stop()
					grace = t.C
				}
				continue
			}
			return outcomeOf(ev)
		}
	}
}

// outcomeOf maps a reader's report to the closes it calls for.
func outcomeOf(ev wsEvent) wsOutcome {
	if ev.refuse != nil {
		return wsOutcome{why: "refused", client: ev.refuse.code, clientReason: ev.refuse.reason, upstream: websocket.StatusNormalClosure}
	}
	var ce websocket.CloseError
	closed := errors.As(ev.err, &ce)
	tooBig := errors.Is(ev.err, websocket.ErrMessageTooBig)
	switch {
	case ev.side == sideUpstream && closed: // Hasura's close code, passed on unchanged
		return wsOutcome{why: "upstream_closed", client: ce.Code, clientReason: ce.Reason}
	case ev.side == sideUpstream && tooBig:
		return wsOutcome{why: "upstream_message_too_big", client: websocket.StatusMessageTooBig, clientReason: reasonMessageTooBig}
	case ev.side == sideUpstream:
		return wsOutcome{why: "upstream_lost", client: websocket.StatusServiceRestart, clientReason: reasonUpstreamLost}
	case closed:
		return wsOutcome{why: "client_closed", upstream: ce.Code, upstreamReason: ce.Reason}
	case tooBig: // the library has closed the client with 1009
		return wsOutcome{why: "client_message_too_big", upstream: websocket.StatusGoingAway, upstreamReason: reasonClientGone}
	default:
		return wsOutcome{why: "client_lost", upstream: websocket.StatusGoingAway, upstreamReason: reasonClientGone}
	}
}

// end sends the close frames o calls for, both sides at once, then cuts whatever is
// left. Close handshakes are bounded by the library (5 s to write, 5 s to wait).
func (c *wsConn) end(o wsOutcome) {
	var wg sync.WaitGroup
	if o.upstream != 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.upstream.Close(o.upstream, o.upstreamReason)
		}()
	}
	if o.client != 0 {
		_ = c.client.Close(o.client, o.clientReason)
	}
	wg.Wait()
	_ = c.client.CloseNow()
	_ = c.upstream.CloseNow()
}

// report hands ev to the deciding goroutine; it never blocks (each reader reports
// once, the channel holds two).
func (c *wsConn) report(ev wsEvent) {
	select {
	case c.events <- ev:
	default:
	}
}

// readClient waits for the client's connection_init, forwards it rewritten, then
// relays the client's messages.
func (c *wsConn) readClient() {
	if c.connectionInit() {
		c.relay(c.client, c.upstream, sideClient, sideUpstream)
	}
}

// connectionInit reads client messages until the connection_init, which it forwards
// rewritten with the current token; graphql-transport-ws ping and pong may come first
// and pass untouched, anything else is refused. It reports false when the connection
// is to end (the reason is reported).
func (c *wsConn) connectionInit() bool {
	for {
		typ, msg, err := c.client.Read(c.ctx)
		if err != nil {
			c.report(wsEvent{side: sideClient, err: err})
			return false
		}
		if typ != websocket.MessageText {
			c.report(wsEvent{refuse: errInitNotObject})
			return false
		}
		mtype, err := connectionInitType(msg)
		if err == nil && mtype != "connection_init" {
			if c.proto == protoTransportWS && (mtype == "ping" || mtype == "pong") {
				// Allowed at any time by the protocol; carries nothing to authenticate.
				if err := c.upstream.Write(c.ctx, typ, msg); err != nil {
					c.report(wsEvent{side: sideUpstream, err: err, write: true})
					return false
				}
				continue
			}
			err = errInitFirst
		}
		if err != nil {
			c.report(wsEvent{refuse: err.(*wsClose)})
			return false
		}

		changed := c.h.tokens.Changed() // before Token: no renewal goes unnoticed
		wait, cancel := context.WithTimeout(c.ctx, c.h.tokenWait)
		jwt, until, err := c.h.tokens.Token(wait)
		cancel()
		if err != nil {
			c.report(wsEvent{refuse: &wsClose{websocket.StatusTryAgainLater, reasonTokenUnavailable}})
			return false
		}
		out, _, err := rewriteConnectionInit(msg, jwt, c.role, c.h.roleAllowed)
		if err != nil {
			var wc *wsClose
			if !errors.As(err, &wc) {
				wc = &wsClose{websocket.StatusInternalError, "connection_init could not be rewritten"}
			}
			c.report(wsEvent{refuse: wc})
			return false
		}
		if err := c.upstream.Write(c.ctx, websocket.MessageText, out); err != nil {
			c.report(wsEvent{side: sideUpstream, err: err, write: true})
			return false
		}
		c.authed <- wsAuth{jwt: jwt, until: until, changed: changed}
		return true
	}
}

// relay copies whole messages from src to dst, type preserved and bytes untouched,
// until either fails.
func (c *wsConn) relay(src, dst *websocket.Conn, srcSide, dstSide wsSide) {
	var buf bytes.Buffer
	for {
		typ, rd, err := src.Reader(c.ctx)
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(rd)
		}
		if err != nil {
			c.report(wsEvent{side: srcSide, err: err})
			return
		}
		if err := dst.Write(c.ctx, typ, buf.Bytes()); err != nil {
			c.report(wsEvent{side: dstSide, err: err, write: true})
			return
		}
		if buf.Cap() > wsKeepBuffer {
			buf = bytes.Buffer{}
		}
	}
}

// roleAllowed reports whether a caller may choose role.
func (h *Handler) roleAllowed(role string) bool { return h.roleIndex(role) >= 0 }
