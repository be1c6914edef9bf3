package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// Error codes of the GraphQL-shaped errors the proxy answers itself (SPEC behaviour 8).
const (
	CodeBadRequest          = "bad-request"          // CodeBadRequest: 400, a request the proxy will not forward.
	CodeRoleNotAllowed      = "role-not-allowed"     // CodeRoleNotAllowed: 403, X-Hasura-Role outside the allow-list.
	CodeHostNotAllowed      = "host-not-allowed"     // CodeHostNotAllowed: 403, Host outside DXTRA_ALLOWED_HOSTS.
	CodeOriginNotAllowed    = "origin-not-allowed"   // CodeOriginNotAllowed: 403, Origin outside DXTRA_ALLOWED_ORIGINS.
	CodeBodyTooLarge        = "body-too-large"       // CodeBodyTooLarge: 413, body over DXTRA_MAX_BODY_BYTES.
	CodeUpstreamUnreachable = "upstream-unreachable" // CodeUpstreamUnreachable: 502, no answer from the API.
	CodeTokenUnavailable    = "token-unavailable"    // CodeTokenUnavailable: 503, no usable access token.
	CodeUpstreamTimeout     = "upstream-timeout"     // CodeUpstreamTimeout: 504, the API did not answer in time.
)

// StatusClientClosedRequest is the status recorded (and written, to nobody) when the
// client went away before the answer: nginx's 499.
const StatusClientClosedRequest = 499

// retryAfterSeconds is the Retry-After sent with 503 token-unavailable.
const retryAfterSeconds = "5"

// graphQLResponseType is the GraphQL-over-HTTP media type.
const graphQLResponseType = "application/graphql-response+json"

// WriteError writes a GraphQL-shaped error answer,
// {"errors":[{"message":message,"extensions":{"code":code}}]}, with status. The
// Content-Type is application/graphql-response+json when r's Accept lists it (with a
// non-zero q), else application/json; r may be nil. Headers already set on w (CORS,
// Retry-After) are kept, except Content-Length and Content-Encoding. It is safe for
// concurrent use on distinct writers.
func WriteError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	type extensions struct {
		Code string `json:"code"`
	}
	type gqlError struct {
		Message    string     `json:"message"`
		Extensions extensions `json:"extensions"`
	}
	body, err := json.Marshal(struct {
		Errors [1]gqlError `json:"errors"`
	}{[1]gqlError{{Message: message, Extensions: extensions{Code: code}}}})
	if err != nil { // cannot happen: strings always marshal
		body = []byte(`{"errors":[{"message":"internal error","extensions":{"code":"internal"}}]}`)
	}
	body = append(body, '\n')
	ct := "application/json"
	if r != nil && acceptsGraphQLResponse(r.Header["Accept"]) {
		ct = graphQLResponseType
	}
	h := w.Header()
	h.Del("Content-Encoding")
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r == nil || r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// acceptsGraphQLResponse reports whether the Accept values list
// application/graphql-response+json with a q other than 0.
func acceptsGraphQLResponse(accept []string) bool {
	for _, v := range accept {
		for item := range strings.SplitSeq(v, ",") {
			mt, params, _ := strings.Cut(item, ";")
			if !asciiEqualFold(strings.TrimSpace(mt), graphQLResponseType) {
				continue
			}
			if !qIsZero(params) {
				return true
			}
		}
	}
	return false
}

// qIsZero reports whether the media-range parameters set q to zero.
func qIsZero(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !asciiEqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return err == nil && q == 0
	}
	return false
}

// guardError is a refusal decided by the proxy before anything is forwarded.
type guardError struct {
	status  int
	code    string
	message string
}

func (e *guardError) Error() string { return "proxy: " + e.message }

// The guard refusals. Shared values: answering one allocates nothing.
var (
	errAbsoluteForm   = &guardError{http.StatusBadRequest, CodeBadRequest, "absolute-form request targets are not proxied; send origin-form requests (a path) to the proxy"}
	errConnect        = &guardError{http.StatusBadRequest, CodeBadRequest, "CONNECT is not supported"}
	errDotSegment     = &guardError{http.StatusBadRequest, CodeBadRequest, "paths with . or .. segments are not proxied"}
	errTwoRoles       = &guardError{http.StatusBadRequest, CodeBadRequest, "more than one X-Hasura-Role header"}
	errRoleNotAllowed = &guardError{http.StatusForbidden, CodeRoleNotAllowed, "the requested X-Hasura-Role is not in DXTRA_ALLOWED_ROLES"}
	errHostNotAllowed = &guardError{http.StatusForbidden, CodeHostNotAllowed, "the Host header is not in DXTRA_ALLOWED_HOSTS"}
	errOriginRefused  = &guardError{http.StatusForbidden, CodeOriginNotAllowed, "the Origin is not in DXTRA_ALLOWED_ORIGINS"}
	errBodyTooLarge   = &guardError{http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "the request body is larger than DXTRA_MAX_BODY_BYTES"}
	errBodyRead       = &guardError{http.StatusBadRequest, CodeBadRequest, "the request body could not be read"}
)

// tokenError is a failure to get (or renew) an access token.
type tokenError struct {
	renewal bool
	err     error
}

func (e *tokenError) Error() string {
	if e.renewal {
		return "renew access token: " + e.err.Error()
	}
	return "get access token: " + e.err.Error()
}

func (e *tokenError) Unwrap() error { return e.err }

// classify maps a failure to the answer the client gets. It is the one place where the
// proxy's own statuses and codes are decided. clientGone means the client's context
// was cancelled: no one will read the answer, and it is not worth a log line.
func classify(err error, clientGone bool) (status int, code, message string) {
	var ge *guardError
	if errors.As(err, &ge) {
		return ge.status, ge.code, ge.message
	}
	if clientGone {
		return StatusClientClosedRequest, "client-closed-request", "the client closed the request"
	}
	var te *tokenError
	if errors.As(err, &te) {
		if te.renewal {
			return http.StatusServiceUnavailable, CodeTokenUnavailable, "the access token was rejected and could not be renewed"
		}
		return http.StatusServiceUnavailable, CodeTokenUnavailable, "no valid access token is available yet; try again shortly"
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return http.StatusGatewayTimeout, CodeUpstreamTimeout, "the Dxtra API did not answer in time"
	}
	return http.StatusBadGateway, CodeUpstreamUnreachable, "the Dxtra API could not be reached"
}

// fail answers r with the error classify maps err to, and logs what deserves it.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	clientGone := errors.Is(r.Context().Err(), context.Canceled)
	status, code, message := classify(err, clientGone)
	switch {
	case status == StatusClientClosedRequest:
		if ce := h.log.Check(zap.DebugLevel, "client went away"); ce != nil {
			ce.Write(zap.Error(err))
		}
		w.WriteHeader(status)
		return
	case status >= 500:
		h.log.Warn("request failed", zap.Int("status", status), zap.String("code", code), zap.Error(err))
	default:
		if ce := h.log.Check(zap.DebugLevel, "request refused"); ce != nil {
			ce.Write(zap.Int("status", status), zap.String("code", code), zap.String("method", r.Method))
		}
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	WriteError(w, r, status, code, message)
}
