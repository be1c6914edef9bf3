package tokencache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Grant names, as reported to Options.OnRenewal and in ExchangeError.Grant.
const (
	GrantPAT          = "pat"
	GrantRefreshToken = "refresh_token"
)

// Exchanger performs the two grants of the auth service. Implementations must be safe
// for concurrent use. A failure should be an *ExchangeError so that the cache can tell a
// refusal from a transient failure; any other error counts as transient.
type Exchanger interface {
	// ExchangePAT signs in with a Personal Access Token (POST /signin/pat).
	ExchangePAT(ctx context.Context, pat Secret) (*Session, error)
	// Refresh trades a refresh token for a new session (POST /token). The refresh
	// token rotates: refreshToken is dead once this returns successfully.
	Refresh(ctx context.Context, refreshToken Secret) (*Session, error)
}

// HTTPExchanger speaks the Hasura Auth wire protocol: POST {BaseURL}/signin/pat with
// {"personalAccessToken":"<PAT>"} and POST {BaseURL}/token with
// {"refreshToken":"<token>"}. BaseURL is DXTRA_AUTH_URL + DXTRA_AUTH_API_PREFIX, e.g.
// "http://127.0.0.1:4000/v1". Redirects are not followed (a 3xx is an ExchangeError)
// unless Client sets its own CheckRedirect. An HTTPExchanger is safe for concurrent use.
type HTTPExchanger struct {
	BaseURL string
	Client  *http.Client // nil → a client with a 30 s timeout
}

// Body caps: a session is about 1 KB, an error a few hundred bytes.
const (
	maxSessionBody = 1 << 20
	maxErrorBody   = 64 << 10
	maxMessageLen  = 200
	maxRetryAfter  = 5 * time.Minute
)

var defaultClient = &http.Client{Timeout: 30 * time.Second, CheckRedirect: noRedirect}

// noRedirect: a 307/308 would replay the credential to wherever Location points.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// ExchangePAT implements Exchanger.
func (h HTTPExchanger) ExchangePAT(ctx context.Context, pat Secret) (*Session, error) {
	return h.post(ctx, GrantPAT, "/signin/pat", "personalAccessToken", pat)
}

// Refresh implements Exchanger.
func (h HTTPExchanger) Refresh(ctx context.Context, refreshToken Secret) (*Session, error) {
	return h.post(ctx, GrantRefreshToken, "/token", "refreshToken", refreshToken)
}

func (h HTTPExchanger) post(ctx context.Context, grant, path, field string, cred Secret) (*Session, error) {
	body, err := credentialBody(field, cred.Reveal())
	if err != nil {
		return nil, &ExchangeError{Grant: grant, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(h.BaseURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, &ExchangeError{Grant: grant, Err: errors.New("invalid auth base URL")}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	client := defaultClient
	if h.Client != nil && h.Client.CheckRedirect != nil {
		client = h.Client
	} else if h.Client != nil {
		c := *h.Client // same transport; only the redirect policy differs
		c.CheckRedirect = noRedirect
		client = &c
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, &ExchangeError{Grant: grant, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		b, err := readCapped(resp.Body, maxSessionBody)
		if err != nil {
			return nil, &ExchangeError{Grant: grant, Status: resp.StatusCode, Err: err}
		}
		s, err := DecodeSession(b)
		if err != nil {
			return nil, &ExchangeError{Grant: grant, Status: resp.StatusCode, Err: err}
		}
		return s, nil
	}
	e := &ExchangeError{Grant: grant, Status: resp.StatusCode}
	if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	b, err := readCapped(resp.Body, maxErrorBody)
	if err != nil && !errors.Is(err, errBodyTooLarge) {
		e.Err = err
	}
	e.Code, e.Message = decodeError(b)
	// The server's text could echo what was sent: never let the credential through.
	if raw := cred.Reveal(); raw != "" {
		e.Code = strings.ReplaceAll(e.Code, raw, cred.Fingerprint())
		e.Message = strings.ReplaceAll(e.Message, raw, cred.Fingerprint())
	}
	return nil, e
}

// credentialBody is exactly {"<field>":"<value>"} (no HTML escaping, no newline).
func credentialBody(field, value string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]string{field: value}); err != nil {
		return nil, errors.New("encode request body")
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

var errBodyTooLarge = errors.New("response body too large")

func readCapped(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if int64(len(b)) > limit {
		return b[:limit], errBodyTooLarge
	}
	if err != nil {
		return b, fmt.Errorf("read response body: %w", err)
	}
	return b, nil
}

// decodeError reads an auth error body: the handler shape {"status","error","message"},
// the validator shapes {"error","reason"} and {"error"}, or anything else (plain text,
// an ingress's HTML), whose first line becomes the message. Both results are cleaned of
// control characters and capped.
func decodeError(body []byte) (code, message string) {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message json.RawMessage `json:"message"`
		Reason  json.RawMessage `json:"reason"`
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &e) == nil {
		code = jsonString(e.Error)
		message = jsonString(e.Message)
		if message == "" {
			message = jsonString(e.Reason)
		}
		return clean(code, maxMessageLen), clean(message, maxMessageLen)
	}
	line, _, _ := bytes.Cut(trimmed, []byte("\n"))
	return "", clean(string(line), maxMessageLen)
}

func jsonString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// clean keeps printable runes (spaces for the rest), valid UTF-8, at most max bytes.
func clean(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = ' '
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// ParseRetryAfter parses a Retry-After header value: delay-seconds or an HTTP-date
// (relative to now). The result is capped at 5 minutes; a date in the past gives 0.
// ok is false for an empty or malformed value. ParseRetryAfter is safe for concurrent
// use.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		for i := 0; i < len(v); i++ {
			if v[i] < '0' || v[i] > '9' {
				return 0, false
			}
		}
		if len(v) > 6 { // more than 11 days: capped anyway, and no overflow
			return maxRetryAfter, true
		}
		n, _ := strconv.Atoi(v)
		return min(time.Duration(n)*time.Second, maxRetryAfter), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return min(d, maxRetryAfter), true
}

// ExchangeError is a failed grant: a non-2xx answer, an unreadable 2xx answer, or a
// network error (Status 0). Error() never contains a credential: request bodies are
// never included and the server's text is capped and scrubbed of the credential sent.
// An ExchangeError is not modified after it is returned; share it freely.
type ExchangeError struct {
	Grant      string        // GrantPAT or GrantRefreshToken
	Status     int           // HTTP status; 0 for a network error
	Code       string        // server "error" field ("invalid-pat", ...), may be ""
	Message    string        // server "message"/"reason", truncated
	RetryAfter time.Duration // parsed Retry-After, capped at 5 min; 0 when absent
	Err        error         // network/decoding cause, if any
}

// Error describes the failure in one line, e.g.
// `exchange pat: status 401 invalid-pat: Invalid or expired personal access token`.
func (e *ExchangeError) Error() string {
	var b strings.Builder
	b.WriteString("exchange ")
	b.WriteString(e.Grant)
	sep := ": "
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
		sep = " "
	}
	if e.Code != "" {
		b.WriteString(sep)
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the network or decoding cause, if any.
func (e *ExchangeError) Unwrap() error { return e.Err }

// refused reports whether the server refused the grant for good: a 4xx other than 429.
func (e *ExchangeError) refused() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
}
