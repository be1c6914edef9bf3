package dxtratest

import (
	"net/http"
	"strings"
)

// WSSession is one WebSocket connection the API accepted, as recorded by
// Server.WSSessions.
type WSSession struct{}

func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func (s *Server) serveWSUpgrade(w http.ResponseWriter, r *http.Request, kind pathKind) {
	s.countAndFail(GraphQL)
	writeQErr(w, http.StatusNotFound, "not-found", "resource does not exist")
}
