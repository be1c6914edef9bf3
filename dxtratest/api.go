package dxtratest

import "net/http"

// Request is one request the API received, as recorded by Server.Requests.
type Request struct {
	Method     string
	Path       string
	RawQuery   string
	Header     http.Header // a clone of the request headers
	Body       []byte
	TokenValid bool   // the Authorization header held one JWT that verified and had not expired
	Role       string // the role the request ran as ("" when authentication failed)
}

// WSSession is one WebSocket connection the API accepted, as recorded by
// Server.WSSessions.
type WSSession struct{}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	s.countAndFail(GraphQL)
	http.NotFound(w, r)
}
