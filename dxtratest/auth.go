package dxtratest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// maxAuthBody bounds what the auth handler reads; larger bodies fail validation.
const maxAuthBody = 1 << 20

// uuidPattern is the OpenAPI pattern of personalAccessToken and refreshToken: lowercase
// hex and unanchored, so a leading space or a trailing newline passes.
const uuidPattern = `\b[0-9a-f]{8}\b-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-\b[0-9a-f]{12}\b`

var uuidRE = regexp.MustCompile(uuidPattern)

// authError is a handler error of the auth service.
type authError struct {
	status  int
	code    string
	message string
}

var (
	errInvalidPAT = &authError{http.StatusUnauthorized, "invalid-pat",
		"Invalid or expired personal access token"}
	errInvalidRefreshToken = &authError{http.StatusUnauthorized, "invalid-refresh-token",
		"Invalid or expired refresh token"}
	errDisabledUser = &authError{http.StatusUnauthorized, "disabled-user", "User is disabled"}
	errConcealed    = &authError{http.StatusBadRequest, "invalid-request",
		"The request payload is incorrect"}
)

// authEndpoint maps a request path to its endpoint.
func (s *Server) authEndpoint(path string) (Endpoint, bool) {
	switch path {
	case s.prefix + "/signin/pat":
		return SignInPAT, true
	case s.prefix + "/token":
		return TokenRefresh, true
	}
	return "", false
}

func (s *Server) serveAuth(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	ep, ok := s.authEndpoint(path)
	if !ok {
		switch {
		case path == "/healthz" && r.Method == http.MethodGet:
			writeRaw(w, http.StatusOK, "application/json; charset=utf-8", []byte(`{"status":"ok"}`))
		case path == s.prefix+"/healthz" && r.Method == http.MethodGet:
			writeRaw(w, http.StatusOK, "application/json; charset=utf-8", []byte(`"OK"`))
		case r.Method == http.MethodPost && len(path) > 1 && path[len(path)-1] == '/':
			if _, ok := s.authEndpoint(path[:len(path)-1]); ok {
				w.Header().Set("Location", path[:len(path)-1])
				w.WriteHeader(http.StatusTemporaryRedirect)
				return
			}
			notFound(w)
		default:
			notFound(w)
		}
		return
	}
	if r.Method != http.MethodPost {
		notFound(w)
		return
	}
	if status, retryAfter, failed := s.countAndFail(ep); failed {
		writeAuthFailure(w, status, retryAfter)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAuthBody+1))
	if err != nil {
		return // client went away
	}
	schema, prop := "SignInPATRequest", "personalAccessToken"
	if ep == TokenRefresh {
		schema, prop = "RefreshTokenRequest", "refreshToken"
	}
	value, verr := validateRequest(schema, prop, body)
	if verr != "" {
		writeValidationError(w, verr)
		return
	}
	var (
		sess []byte
		aerr *authError
	)
	if ep == SignInPAT {
		sess, aerr = s.signInPAT(value)
	} else {
		sess, aerr = s.refreshToken(value)
	}
	if aerr != nil {
		if s.conceal.Load() {
			aerr = errConcealed
		}
		writeAuthError(w, aerr)
		return
	}
	writeRaw(w, http.StatusOK, "application/json", sess)
}

// signInPAT exchanges a PAT: a new refresh token (and id) on every call.
func (s *Server) signInPAT(pat string) ([]byte, *authError) {
	now := s.now()
	s.mu.Lock()
	if _, ok := s.pats[pat]; !ok {
		s.mu.Unlock()
		return nil, errInvalidPAT
	}
	if s.disabled.Load() {
		s.mu.Unlock()
		return nil, errDisabledUser
	}
	rt, id := newUUID(), newUUID()
	s.refresh[rt] = &refreshState{id: id, pat: pat, expires: now.Add(s.rtTTL)}
	iat := s.nextIatLocked(now)
	s.mu.Unlock()
	return s.encodeSession(true, iat, rt, id), nil
}

// refreshToken rotates a refresh token: the old value dies at once, the id stays. The
// check and the rotation happen under one lock, so of concurrent uses one wins.
func (s *Server) refreshToken(token string) ([]byte, *authError) {
	now := s.now()
	s.mu.Lock()
	st, ok := s.refresh[token]
	if ok && !now.Before(st.expires) {
		delete(s.refresh, token)
		ok = false
	}
	if !ok {
		s.mu.Unlock()
		return nil, errInvalidRefreshToken
	}
	if s.disabled.Load() {
		s.mu.Unlock()
		return nil, errDisabledUser
	}
	delete(s.refresh, token)
	rt := newUUID()
	st.expires = now.Add(s.rtTTL)
	s.refresh[rt] = st
	id := st.id
	iat := s.nextIatLocked(now)
	s.mu.Unlock()
	return s.encodeSession(false, iat, rt, id), nil
}

// nextIatLocked returns the iat of a new token: now in Unix seconds, moved past the
// previous token's iat so that no two tokens are byte-identical. s.mu must be held.
func (s *Server) nextIatLocked(now time.Time) int64 {
	iat := now.Unix()
	if iat <= s.lastIat {
		iat = s.lastIat + 1
	}
	s.lastIat = iat
	return iat
}

// encodeSession mints an access token and renders the session body (keys in
// alphabetical order, trailing newline), wrapped in {"session":...} when wrapped.
func (s *Server) encodeSession(wrapped bool, iat int64, refreshToken, refreshTokenID string) []byte {
	jwt := s.mint(iat)
	var b bytes.Buffer
	b.Grow(len(jwt) + len(s.userJSON) + 200)
	if wrapped {
		b.WriteString(`{"session":`)
	}
	b.WriteString(`{"accessToken":`)
	writeJSONString(&b, jwt)
	b.WriteString(`,"accessTokenExpiresIn":`)
	b.WriteString(strconv.FormatInt(s.ttlSec, 10))
	b.WriteString(`,"refreshToken":`)
	writeJSONString(&b, refreshToken)
	b.WriteString(`,"refreshTokenId":`)
	writeJSONString(&b, refreshTokenID)
	b.WriteString(`,"user":`)
	b.Write(s.userJSON)
	b.WriteByte('}')
	if wrapped {
		b.WriteByte('}')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

func writeJSONString(b *bytes.Buffer, v string) {
	enc, _ := json.Marshal(v) // a string always encodes
	b.Write(enc)
}

// validateRequest checks an auth request body the way the real server's OpenAPI
// validator (kin-openapi) does: a JSON object with exactly one string property prop that
// matches uuidPattern. It returns the property's value, or the validator's error text.
func validateRequest(schema, prop string, body []byte) (value string, errText string) {
	const prefix = "error in openapi3filter.RequestError: request body has an error: "
	schemaPrefix := prefix + "doesn't match schema #/components/schemas/" + schema + ": "
	if len(body) == 0 {
		return "", prefix + "value is required but missing"
	}
	if len(body) > maxAuthBody {
		return "", prefix + "failed to decode request body: request body too large"
	}
	var v any
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&v); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", prefix + "failed to decode request body: " + err.Error()
	}
	if v == nil {
		return "", schemaPrefix + "Value is not nullable"
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return "", schemaPrefix + "value must be an object"
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	at := `Error at "/` + prop + `": `
	for _, k := range keys {
		if k != prop {
			return "", schemaPrefix + `property "` + k + `" is unsupported`
		}
		switch pv := obj[k].(type) {
		case nil:
			return "", schemaPrefix + at + "Value is not nullable"
		case string:
			if !uuidRE.MatchString(pv) {
				return "", schemaPrefix + at + `string doesn't match the regular expression "` + uuidPattern + `"`
			}
			value = pv
		default:
			return "", schemaPrefix + at + "value must be a string"
		}
	}
	if len(keys) == 0 {
		return "", schemaPrefix + at + `property "` + prop + `" is missing`
	}
	return value, ""
}

// notFound is gin's 404: text/plain, no trailing newline.
func notFound(w http.ResponseWriter) {
	writeRaw(w, http.StatusNotFound, "text/plain", []byte("404 page not found"))
}

// writeValidationError writes the OpenAPI validator's 400: one "error" key, charset in
// the Content-Type, no trailing newline.
func writeValidationError(w http.ResponseWriter, text string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{text})
	writeRaw(w, http.StatusBadRequest, "application/json; charset=utf-8", b)
}

// writeAuthError writes a handler error: {"error","message","status"} and a newline.
func writeAuthError(w http.ResponseWriter, e *authError) {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
		Status  int    `json:"status"`
	}{e.code, e.message, e.status})
	writeRaw(w, e.status, "application/json", b.Bytes())
}

// writeAuthFailure writes an injected failure: 429 with an empty body, other statuses
// with the internal-server-error body.
func writeAuthFailure(w http.ResponseWriter, status int, retryAfter string) {
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(status)
		return
	}
	writeAuthError(w, &authError{status, "internal-server-error", "Internal server error"})
}

func writeRaw(w http.ResponseWriter, status int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
