package proxy

import (
	"context"
	"net/http"
)

// This file is a placeholder: the WebSocket relay (SPEC behaviour 12) replaces it.
// ServeHTTP hands it upgrade requests that passed every guard, with the role chosen.
// The relay keeps its own state in Handler.ws (type wsState) and sets it up in
// initWebSocket, which New calls last.

// wsState is the WebSocket relay's state inside Handler.
type wsState struct{}

// initWebSocket prepares h.ws; New calls it once, after every other field is set.
func (h *Handler) initWebSocket() error { return nil }

// serveWebSocket relays one WebSocket connection. Not implemented yet: 501.
func (h *Handler) serveWebSocket(w http.ResponseWriter, r *http.Request, role string) {
	WriteError(w, r, http.StatusNotImplemented, "websocket-not-implemented", "WebSocket subscriptions are not supported yet")
}

// Shutdown closes every proxied WebSocket with 1001 (going away) and waits, bounded
// by ctx, until they are gone; a no-op when there are none. It is safe for
// concurrent use.
func (h *Handler) Shutdown(ctx context.Context) error { return nil }
