package tokencache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		v      string
		want   time.Duration
		wantOK bool
	}{
		{"empty", "", 0, false},
		{"seconds", "30", 30 * time.Second, true},
		{"zero", "0", 0, true},
		{"spaces", " 7 ", 7 * time.Second, true},
		{"capped", "3600", 5 * time.Minute, true},
		{"huge", "99999999999999999999999", 5 * time.Minute, true},
		{"negative", "-5", 0, false},
		{"fraction", "1.5", 0, false},
		{"garbage", "soon", 0, false},
		{"digits then text", "10s", 0, false},
		{"HTTP-date in 2 min", now.Add(2 * time.Minute).Format(http.TimeFormat), 2 * time.Minute, true},
		{"HTTP-date far ahead", now.Add(time.Hour).Format(http.TimeFormat), 5 * time.Minute, true},
		{"HTTP-date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"RFC 850 date", now.Add(time.Minute).Format("Monday, 02-Jan-06 15:04:05 GMT"), time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.v, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.v, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "30", "120", "3600", "Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "-1", "1e3", "９"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		if d < 0 || d > 5*time.Minute {
			t.Fatalf("ParseRetryAfter(%q) = %v; want within [0, 5m]", v, d)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v, false; want 0 when not ok", v, d)
		}
	})
}

func TestDecodeError(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		wantCode    string
		wantMessage string
	}{
		{"handler shape", `{"error":"invalid-pat","message":"Invalid or expired personal access token","status":401}` + "\n", "invalid-pat", "Invalid or expired personal access token"},
		{"concealed", `{"error":"invalid-request","message":"The request payload is incorrect","status":400}`, "invalid-request", "The request payload is incorrect"},
		{"validator with reason", `{"error":"schema-validation-error","reason":"property \"refreshToken\" is missing"}`, "schema-validation-error", `property "refreshToken" is missing`},
		{"old validator: error only", `{"error":"error in openapi3filter.RequestError: request body has an error: value is required but missing"}`, "error in openapi3filter.RequestError: request body has an error: value is required but missing", ""},
		{"429 empty body", ``, "", ""},
		{"plain text", "404 page not found\n", "", "404 page not found"},
		{"html first line only", "<html>\n<body>502 Bad Gateway</body>", "", "<html>"},
		{"fields of wrong type", `{"error":5,"message":["x"]}`, "", ""},
		{"control characters cleaned", "{\"error\":\"a\\u0000b\",\"message\":\"line1\\nline2\"}", "a b", "line1 line2"},
		{"message capped", `{"error":"x","message":"` + strings.Repeat("m", 1000) + `"}`, "x", strings.Repeat("m", maxMessageLen)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := decodeError([]byte(tt.body))
			if code != tt.wantCode || msg != tt.wantMessage {
				t.Errorf("decodeError() = %q, %q; want %q, %q", code, msg, tt.wantCode, tt.wantMessage)
			}
		})
	}
}

func FuzzDecodeError(f *testing.F) {
	for _, s := range []string{
		`{"error":"invalid-pat","message":"Invalid or expired personal access token","status":401}` + "\n",
		`{"error":"invalid-refresh-token","message":"Invalid or expired refresh token","status":401}`,
		`{"error":"disabled-user","message":"User is disabled","status":401}`,
		`{"error":"invalid-request","message":"The request payload is incorrect","status":400}`,
		`{"error":"error in openapi3filter.RequestError: request body has an error: doesn't match schema #/components/schemas/SignInPATRequest: Error at \"/personalAccessToken\": string doesn't match the regular expression \"\\b[0-9a-f]{8}\\b-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-\\b[0-9a-f]{12}\\b\""}`,
		`{"error":"request-validation-error","reason":"x"}`,
		"404 page not found\n",
		"",
		"\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		code, msg := decodeError(body)
		for _, s := range []string{code, msg} {
			if len(s) > maxMessageLen || !utf8.ValidString(s) || strings.ContainsAny(s, "\n\r\x00") {
				t.Fatalf("decodeError() = %q, %q; want capped, valid, single-line text", code, msg)
			}
		}
	})
}

type recorded struct {
	method, path, contentType, body string
}

func newAuthStub(t *testing.T, answers map[string]func(w http.ResponseWriter)) (*httptest.Server, chan recorded) {
	got := make(chan recorded, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- recorded{r.Method, r.URL.Path, r.Header.Get("Content-Type"), string(b)}
		if a, ok := answers[r.URL.Path]; ok {
			a(w)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func answer(status int, header map[string]string, body string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func TestHTTPExchangerRequests(t *testing.T) {
	srv, got := newAuthStub(t, map[string]func(http.ResponseWriter){
		"/v1/signin/pat": answer(200, map[string]string{"Content-Type": "application/json"}, observedSignInPAT),
		"/v1/token":      answer(200, map[string]string{"Content-Type": "application/json"}, observedRefresh),
	})
	ex := HTTPExchanger{BaseURL: srv.URL + "/v1/"} // a trailing slash is tolerated
	pat := "4f2b9c1e-7d3a-4e8b-9a6f-1c2d3e4f5a6b"
	s, err := ex.ExchangePAT(context.Background(), NewSecret(pat))
	if err != nil {
		t.Fatalf("ExchangePAT() error = %v", err)
	}
	if s.RefreshToken.Reveal() != "5d1b4c2a-8e7f-4a3b-9c6d-2e1f0a9b8c7d" {
		t.Errorf("ExchangePAT() refresh token = %v; want the wrapped session's", s.RefreshToken)
	}
	want := recorded{"POST", "/v1/signin/pat", "application/json", `{"personalAccessToken":"` + pat + `"}`}
	if r := <-got; r != want {
		t.Errorf("request = %+v; want %+v", r, want)
	}

	s, err = ex.Refresh(context.Background(), s.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh() error = %v", err)
	}
	if s.RefreshToken.Reveal() != "6e2c5d3b-9f8a-4b4c-8d7e-3f2a1b0c9d8e" {
		t.Errorf("Refresh() refresh token = %v; want the bare session's", s.RefreshToken)
	}
	want = recorded{"POST", "/v1/token", "application/json", `{"refreshToken":"5d1b4c2a-8e7f-4a3b-9c6d-2e1f0a9b8c7d"}`}
	if r := <-got; r != want {
		t.Errorf("request = %+v; want %+v", r, want)
	}
}

func TestHTTPExchangerErrors(t *testing.T) {
	pat := NewSecret(knownSecret)
	tests := []struct {
		name   string
		answer func(http.ResponseWriter)
		want   ExchangeError // Err compared by presence only
		hasErr bool
	}{
		{"invalid-pat", answer(401, nil, `{"error":"invalid-pat","message":"Invalid or expired personal access token","status":401}`+"\n"),
			ExchangeError{Grant: "pat", Status: 401, Code: "invalid-pat", Message: "Invalid or expired personal access token"}, false},
		{"concealed 400", answer(400, nil, `{"error":"invalid-request","message":"The request payload is incorrect","status":400}`),
			ExchangeError{Grant: "pat", Status: 400, Code: "invalid-request", Message: "The request payload is incorrect"}, false},
		{"validator 400", answer(400, nil, `{"error":"request-validation-error","reason":"bad"}`),
			ExchangeError{Grant: "pat", Status: 400, Code: "request-validation-error", Message: "bad"}, false},
		{"429 empty body", answer(429, nil, ""),
			ExchangeError{Grant: "pat", Status: 429}, false},
		{"429 with Retry-After", answer(429, map[string]string{"Retry-After": "42"}, ""),
			ExchangeError{Grant: "pat", Status: 429, RetryAfter: 42 * time.Second}, false},
		{"503 Retry-After capped", answer(503, map[string]string{"Retry-After": "86400"}, `{"error":"internal-server-error","message":"Internal server error","status":500}`),
			ExchangeError{Grant: "pat", Status: 503, Code: "internal-server-error", Message: "Internal server error", RetryAfter: 5 * time.Minute}, false},
		{"echoed credential scrubbed", answer(400, nil, `{"error":"bad `+knownSecret+`","reason":"value `+knownSecret+` does not match"}`),
			ExchangeError{Grant: "pat", Status: 400, Code: "bad " + knownFingerprint, Message: "value " + knownFingerprint + " does not match"}, false},
		{"redirect not followed", answer(307, map[string]string{"Location": "http://elsewhere.invalid/steal"}, ""),
			ExchangeError{Grant: "pat", Status: 307}, false},
		{"200 with garbage", answer(200, nil, "<html>"),
			ExchangeError{Grant: "pat", Status: 200}, true},
		{"200 too large", answer(200, nil, `{"accessToken":"`+strings.Repeat("a", maxSessionBody)+`"}`),
			ExchangeError{Grant: "pat", Status: 200}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newAuthStub(t, map[string]func(http.ResponseWriter){"/signin/pat": tt.answer})
			_, err := HTTPExchanger{BaseURL: srv.URL}.ExchangePAT(context.Background(), pat)
			var ee *ExchangeError
			if !errors.As(err, &ee) {
				t.Fatalf("ExchangePAT() error = %v; want *ExchangeError", err)
			}
			if (ee.Err != nil) != tt.hasErr {
				t.Errorf("ExchangeError.Err = %v; want present %v", ee.Err, tt.hasErr)
			}
			got := *ee
			got.Err = nil
			if got != tt.want {
				t.Errorf("ExchangePAT() error = %+v; want %+v", got, tt.want)
			}
			if strings.Contains(err.Error(), knownSecret) {
				t.Errorf("Error() = %q reveals the PAT", err)
			}
		})
	}
}

func TestHTTPExchangerCustomClientFollowsNoRedirect(t *testing.T) {
	var leaked atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(true)
	}))
	defer elsewhere.Close()
	srv, _ := newAuthStub(t, map[string]func(http.ResponseWriter){
		"/signin/pat": answer(307, map[string]string{"Location": elsewhere.URL + "/steal"}, ""),
	})
	ex := HTTPExchanger{BaseURL: srv.URL, Client: &http.Client{Timeout: 5 * time.Second}}
	_, err := ex.ExchangePAT(context.Background(), NewSecret(knownSecret))
	var ee *ExchangeError
	if !errors.As(err, &ee) || ee.Status != 307 {
		t.Errorf("ExchangePAT() error = %v; want status 307", err)
	}
	if leaked.Load() {
		t.Error("the redirect was followed: the PAT went to another server")
	}
}

func TestHTTPExchangerNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := HTTPExchanger{BaseURL: url}.Refresh(context.Background(), NewSecret(knownSecret))
	var ee *ExchangeError
	if !errors.As(err, &ee) || ee.Status != 0 || ee.Err == nil || ee.Grant != GrantRefreshToken {
		t.Fatalf("Refresh() error = %#v; want a network *ExchangeError", err)
	}
	if strings.Contains(err.Error(), knownSecret) {
		t.Errorf("Error() = %q reveals the token", err)
	}
}

func TestExchangeErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  *ExchangeError
		want string
	}{
		{"handler", &ExchangeError{Grant: "pat", Status: 401, Code: "invalid-pat", Message: "Invalid or expired personal access token"}, "exchange pat: status 401 invalid-pat: Invalid or expired personal access token"},
		{"429", &ExchangeError{Grant: "refresh_token", Status: 429, RetryAfter: 5 * time.Second}, "exchange refresh_token: status 429 (retry after 5s)"},
		{"network", &ExchangeError{Grant: "pat", Err: fmt.Errorf("dial tcp: connection refused")}, "exchange pat: dial tcp: connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q; want %q", got, tt.want)
			}
		})
	}
}
