package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// wsMsg is a graphql-transport-ws message.
type wsMsg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

func wsWrite(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %s: %v", msg, err)
	}
}

func wsNext(ctx context.Context, t *testing.T, c *websocket.Conn) (wsMsg, error) {
	t.Helper()
	_, b, err := c.Read(ctx)
	if err != nil {
		return wsMsg{}, err
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	return m, nil
}

// TestWebSocketSubscriptionThroughTheBinary: a subscription through the real program
// gets data, the connection gauge counts it, and SIGTERM closes it with 1001 while the
// process exits 0 within the shutdown timeout.
func TestWebSocketSubscriptionThroughTheBinary(t *testing.T) {
	fake := newFake(t, dxtratest.Options{TickInterval: 50 * time.Millisecond})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT(), "DXTRA_SHUTDOWN_TIMEOUT", "10s"))
	waitReady(t, p)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+p.Listen+"/v1/graphql",
		&websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatalf("dial the proxy: %v", err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "graphql-transport-ws" {
		t.Errorf("subprotocol = %q; want graphql-transport-ws", c.Subprotocol())
	}
	wsWrite(t, c, `{"type":"connection_init"}`)
	if m, err := wsNext(ctx, t, c); err != nil || m.Type != "connection_ack" {
		t.Fatalf("after connection_init: %+v, %v; want connection_ack", m, err)
	}
	wsWrite(t, c, `{"id":"1","type":"subscribe","payload":{"query":"subscription { tick }"}}`)
	for want := 1; want <= 2; want++ {
		m, err := wsNext(ctx, t, c)
		if err != nil || m.Type != "next" || !strings.Contains(string(m.Payload), `"tick":`) {
			t.Fatalf("subscription message %+v, %v; want next with a tick", m, err)
		}
	}
	if g := value(scrape(t, p.Admin), "dxtra_proxy_websocket_connections"); g != 1 {
		t.Errorf("dxtra_proxy_websocket_connections = %v while subscribed; want 1", g)
	}
	if s := fake.WSSessions(); len(s) != 1 || !s[0].Authenticated || s[0].UpgradeAuthorization {
		t.Errorf("upstream sessions %+v; want one, authenticated through connection_init only", s)
	}

	p.Signal(syscall.SIGTERM)
	var ce websocket.CloseError
	for {
		_, err := wsNext(ctx, t, c)
		if err == nil {
			continue // ticks still in flight
		}
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		break
	}
	if ce.Code != websocket.StatusGoingAway {
		t.Errorf("close at SIGTERM = %v; want 1001", ce)
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d; want 0", code)
	}
}

// TestExampleSubscribeWatchesTheDemo runs examples/subscribe, as the README shows it,
// against `dxtra-proxy demo`.
func TestExampleSubscribeWatchesTheDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example")
	}
	bin := filepath.Join(t.TempDir(), "subscribe")
	build := exec.Command("go", "build", "-o", bin, "../../examples/subscribe")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/subscribe: %v\n%s", err, out)
	}
	p := startBinary(t, map[string]string{}, "demo")
	waitReady(t, p)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-url", "ws://"+p.Listen+"/v1/graphql", "-n", "2")
	cmd.Env = os.Environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("examples/subscribe: %v\nstderr:\n%s", err, stderr.String())
	}
	want := regexp.MustCompile(`^next \{"data":\{"tick":1\}\}\nnext \{"data":\{"tick":2\}\}\n$`)
	if !want.MatchString(stdout.String()) {
		t.Errorf("examples/subscribe printed %q; want two ticks", stdout.String())
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("demo exit code after SIGTERM = %d; want 0", code)
	}
}
