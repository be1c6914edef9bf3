// Command subscribe watches a GraphQL subscription through dxtra-proxy, the way an app
// behind the proxy would: it connects to the proxy's WebSocket endpoint with the
// graphql-transport-ws subprotocol, sends connection_init with no credentials (the proxy
// puts the token there), subscribes, and prints every message as it arrives. When the
// proxy closes the socket with 1012 (service restart: its token was renewed) or 1013,
// it reconnects and subscribes again, as graphql-ws clients do.
//
// With `dxtra-proxy demo` running in another terminal:
//
//	go run ./examples/subscribe
//
// prints a tick every second, and a reconnect every 15 s, when the demo's 30 s token is
// renewed. Flags: -url (default ws://127.0.0.1:8080/v1/graphql), -query (default
// "subscription { tick }"), -n (stop after that many data messages; 0 = never).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/v1/graphql", "the proxy's GraphQL WebSocket URL")
	query := flag.String("query", "subscription { tick }", "the subscription document")
	n := flag.Int("n", 0, "stop after this many data messages (0: never)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *query, *n, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		os.Exit(1)
	}
}

// retryWait is how long run waits before reconnecting after a 1012 or 1013.
const retryWait = 500 * time.Millisecond

// run subscribes until n data messages have arrived (n > 0), ctx ends, or the
// connection ends in a way that calls for no reconnect.
func run(ctx context.Context, url, query string, n int, stdout, stderr io.Writer) error {
	seen := 0
	for {
		err := subscribeOnce(ctx, url, query, n, &seen, stdout)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		switch websocket.CloseStatus(err) {
		case websocket.StatusServiceRestart, websocket.StatusTryAgainLater:
			fmt.Fprintf(stderr, "subscribe: %v; reconnecting\n", err)
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryWait):
		}
	}
}

// subscribeOnce runs one connection; nil means done (n data messages seen).
func subscribeOnce(ctx context.Context, url, query string, n int, seen *int, stdout io.Writer) error {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(16 << 20)

	send := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return c.Write(ctx, websocket.MessageText, b)
	}
	if err := send(map[string]any{"type": "connection_init"}); err != nil {
		return err
	}
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return err
		}
		var m struct {
			Type    string          `json:"type"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(msg, &m); err != nil {
			return fmt.Errorf("message %q: %w", msg, err)
		}
		switch m.Type {
		case "connection_ack":
			if err := send(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]string{"query": query}}); err != nil {
				return err
			}
		case "ping":
			if err := send(map[string]string{"type": "pong"}); err != nil {
				return err
			}
		case "next":
			fmt.Fprintf(stdout, "next %s\n", m.Payload)
			if *seen++; n > 0 && *seen >= n {
				return c.Close(websocket.StatusNormalClosure, "")
			}
		case "complete":
			return c.Close(websocket.StatusNormalClosure, "")
		case "error":
			_ = c.Close(websocket.StatusNormalClosure, "")
			return fmt.Errorf("subscription error: %s", m.Payload)
		}
	}
}
