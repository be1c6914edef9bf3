package tokencache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Loopback tests against dxtratest, the fake that speaks the observed wire protocol.
// Real time, short lifetimes in whole seconds.

func TestHTTPExchangerWire(t *testing.T) {
	srv := dxtratest.NewServer(dxtratest.Options{})
	defer srv.Close()
	ex := HTTPExchanger{BaseURL: srv.AuthBaseURL()}
	ctx := context.Background()
	pat := NewSecret(srv.NewPAT())

	before := time.Now().Truncate(time.Second)
	s1, err := ex.ExchangePAT(ctx, pat)
	if err != nil {
		t.Fatalf("ExchangePAT() error = %v", err)
	}
	if s1.ExpiresIn != 900*time.Second || s1.RefreshTokenID == "" {
		t.Errorf("ExchangePAT() = ExpiresIn %v, RefreshTokenID %q; want 900s and an id", s1.ExpiresIn, s1.RefreshTokenID)
	}
	tok := newToken(s1, time.Now())
	if tok.Expiry.Before(before.Add(900*time.Second)) || tok.Expiry.After(time.Now().Add(900*time.Second)) {
		t.Errorf("token Expiry = %v; want about now+900s (JWT exp)", tok.Expiry)
	}
	if diff := cmp.Diff(srv.Roles(), tok.Roles); diff != "" {
		t.Errorf("token Roles mismatch (-server +token):\n%s", diff)
	}

	s2, err := ex.Refresh(ctx, s1.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh() error = %v", err)
	}
	if s2.RefreshToken.Equal(s1.RefreshToken) || s2.RefreshTokenID != s1.RefreshTokenID {
		t.Errorf("Refresh() did not rotate: %v/%s → %v/%s", s1.RefreshToken, s1.RefreshTokenID, s2.RefreshToken, s2.RefreshTokenID)
	}
	if s2.AccessToken.Equal(s1.AccessToken) {
		t.Error("Refresh() returned the same access token")
	}

	wantErr := func(t *testing.T, err error, status int, code string) *ExchangeError {
		t.Helper()
		var ee *ExchangeError
		if !errors.As(err, &ee) || ee.Status != status || (code != "" && ee.Code != code) {
			t.Fatalf("error = %v; want *ExchangeError status %d code %q", err, status, code)
		}
		return ee
	}
	t.Run("old refresh token dead", func(t *testing.T) {
		_, err := ex.Refresh(ctx, s1.RefreshToken)
		wantErr(t, err, 401, "invalid-refresh-token")
	})
	t.Run("unknown PAT", func(t *testing.T) {
		_, err := ex.ExchangePAT(ctx, NewSecret("00000000-0000-4000-8000-000000000000"))
		ee := wantErr(t, err, 401, "invalid-pat")
		if ee.Message != "Invalid or expired personal access token" {
			t.Errorf("Message = %q", ee.Message)
		}
	})
	t.Run("validator 400 for a malformed PAT", func(t *testing.T) {
		bad := "not-a-uuid" // the unanchored UUID pattern must find no lowercase UUID in it
		_, err := ex.ExchangePAT(ctx, NewSecret(bad))
		wantErr(t, err, 400, "")
		if strings.Contains(err.Error(), bad) {
			t.Errorf("Error() = %q contains the PAT", err)
		}
	})
	t.Run("429 empty body", func(t *testing.T) {
		srv.FailNext(dxtratest.SignInPAT, 1, 429, "")
		_, err := ex.ExchangePAT(ctx, pat)
		ee := wantErr(t, err, 429, "")
		if ee.Code != "" || ee.Message != "" || ee.RetryAfter != 0 {
			t.Errorf("error = %+v; want a bare 429", ee)
		}
	})
	t.Run("429 with Retry-After", func(t *testing.T) {
		srv.FailNext(dxtratest.TokenRefresh, 1, 429, "7")
		_, err := ex.Refresh(ctx, s2.RefreshToken)
		if ee := wantErr(t, err, 429, ""); ee.RetryAfter != 7*time.Second {
			t.Errorf("RetryAfter = %v; want 7s", ee.RetryAfter)
		}
	})
	t.Run("503", func(t *testing.T) {
		srv.FailNext(dxtratest.SignInPAT, 1, 503, "")
		_, err := ex.ExchangePAT(ctx, pat)
		wantErr(t, err, 503, "internal-server-error")
	})
	t.Run("concealed errors", func(t *testing.T) {
		srv.SetConcealErrors(true)
		defer srv.SetConcealErrors(false)
		_, err := ex.Refresh(ctx, s1.RefreshToken)
		wantErr(t, err, 400, "invalid-request")
		_, err = ex.ExchangePAT(ctx, NewSecret("00000000-0000-4000-8000-000000000000"))
		wantErr(t, err, 400, "invalid-request")
	})
	t.Run("disabled user", func(t *testing.T) {
		srv.SetUserDisabled(true)
		defer srv.SetUserDisabled(false)
		_, err := ex.ExchangePAT(ctx, pat)
		wantErr(t, err, 401, "disabled-user")
	})
	t.Run("wrong prefix", func(t *testing.T) {
		_, err := HTTPExchanger{BaseURL: srv.AuthURL}.ExchangePAT(ctx, pat)
		wantErr(t, err, 404, "")
	})
}

func TestHTTPExchangerBarePrefix(t *testing.T) {
	srv := dxtratest.NewServer(dxtratest.Options{BarePrefix: true})
	defer srv.Close()
	if _, err := (HTTPExchanger{BaseURL: srv.AuthBaseURL()}).ExchangePAT(context.Background(), NewSecret(srv.NewPAT())); err != nil {
		t.Fatalf("ExchangePAT() without prefix: error = %v", err)
	}
}

// wireCache runs a Cache against srv until the test ends.
type wireCache struct {
	c      *Cache
	log    *syncBuffer
	readyC chan bool
}

func startWireCache(t *testing.T, srv *dxtratest.Server, pat string) *wireCache {
	t.Helper()
	w := &wireCache{log: &syncBuffer{}, readyC: make(chan bool, 100)}
	c, err := New(Options{
		PAT:       func() (Secret, error) { return NewSecret(pat), nil },
		Exchanger: HTTPExchanger{BaseURL: srv.AuthBaseURL()},
		Role:      "user",
		Logger:    zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(w.log), zap.DebugLevel)),
		OnReady:   func(ok bool) { w.readyC <- ok },
	})
	if err != nil {
		t.Fatal(err)
	}
	w.c = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
		if strings.Contains(w.log.String(), pat) {
			t.Errorf("log contains the PAT")
		}
	})
	return w
}

// nextToken waits (bounded) for a token other than prev.
func (w *wireCache) nextToken(t *testing.T, prev Token) Token {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		changed := w.c.Changed()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tok, err := w.c.Token(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Token() error = %v", err)
		}
		if !tok.Value.Equal(prev.Value) {
			return tok
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("no new token within 10 s")
		}
	}
}

// apiAccepts asks the fake GraphQL API whether it accepts tok right now.
func apiAccepts(t *testing.T, srv *dxtratest.Server, tok Token) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.APIURL+"/v1/graphql", strings.NewReader(`{"query":"{__typename}"}`))
	req.Header.Set("Authorization", "Bearer "+tok.Value.Reveal())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("API request: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == 200 && strings.Contains(string(b), `"data"`)
}

// The cache end to end over loopback with 2-second tokens: PAT once, then /token,
// every served token accepted by the API, never past its UsableUntil.
func TestCacheWire(t *testing.T) {
	srv := dxtratest.NewServer(dxtratest.Options{AccessTokenTTL: 2 * time.Second})
	defer srv.Close()
	w := startWireCache(t, srv, srv.NewPAT())
	var tok Token
	for range 3 {
		tok = w.nextToken(t, tok)
		if !apiAccepts(t, srv, tok) {
			t.Errorf("API refused a served token")
		}
		if life := tok.Expiry.Sub(tok.IssuedAt); life > 2*time.Second || life <= 0 {
			t.Errorf("token lifetime %v; want ≤ 2s", life)
		}
	}
	if got := srv.Calls(dxtratest.SignInPAT); got != 1 {
		t.Errorf("%d /signin/pat calls; want 1", got)
	}
	if got := srv.Calls(dxtratest.TokenRefresh); got < 2 {
		t.Errorf("%d /token calls; want ≥ 2", got)
	}
	if ok, reason := w.c.Ready(); !ok {
		t.Errorf("Ready() = false, %q", reason)
	}

	t.Run("transient 503 on /token is retried", func(t *testing.T) {
		srv.FailNext(dxtratest.TokenRefresh, 1, 503, "")
		pats := srv.Calls(dxtratest.SignInPAT)
		tok = w.nextToken(t, tok)
		if got := srv.Calls(dxtratest.SignInPAT); got != pats {
			t.Errorf("PAT exchanged after a 503 on /token")
		}
	})
}

// With errors concealed and refresh tokens that die before renewal, /token answers
// 400 invalid-request and the cache falls back to the PAT.
func TestCacheWireConcealedFallback(t *testing.T) {
	srv := dxtratest.NewServer(dxtratest.Options{AccessTokenTTL: 3 * time.Second, RefreshTokenTTL: time.Second})
	defer srv.Close()
	srv.SetConcealErrors(true)
	w := startWireCache(t, srv, srv.NewPAT())
	var tok Token
	for range 2 {
		tok = w.nextToken(t, tok)
	}
	if refresh, pats := srv.Calls(dxtratest.TokenRefresh), srv.Calls(dxtratest.SignInPAT); refresh < 1 || pats < 2 {
		t.Errorf("calls: %d /token, %d /signin/pat; want the PAT fallback after a refused /token", refresh, pats)
	}
	if ok, reason := w.c.Ready(); !ok {
		t.Errorf("Ready() = false, %q", reason)
	}
}

// A revoked PAT (its refresh tokens revoked too, the test knob): not ready, with the
// server's code, within one renewal.
func TestCacheWireRevokedPAT(t *testing.T) {
	srv := dxtratest.NewServer(dxtratest.Options{AccessTokenTTL: 2 * time.Second})
	defer srv.Close()
	pat := srv.NewPAT()
	w := startWireCache(t, srv, pat)
	w.nextToken(t, Token{})
	if ok := <-w.readyC; !ok {
		t.Fatal("first OnReady(false); want true")
	}
	srv.RevokePAT(pat)
	select {
	case ok := <-w.readyC:
		if ok {
			t.Fatal("OnReady(true) after the revocation; want false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still ready 10 s after the PAT was revoked")
	}
	var ok bool
	var reason string
	deadline := time.Now().Add(10 * time.Second)
	for ok, reason = w.c.Ready(); !strings.Contains(reason, "invalid-pat") && time.Now().Before(deadline); ok, reason = w.c.Ready() {
		<-time.After(50 * time.Millisecond) // polling a real clock, bounded
	}
	if ok || reason != "auth service refused the PAT: invalid-pat" {
		t.Errorf("Ready() = %v, %q; want false, refused: invalid-pat", ok, reason)
	}
	if strings.Count(w.log.String(), `"level":"error"`) != 1 {
		t.Errorf("want exactly one error log line; log:\n%s", w.log)
	}
}

// Many goroutines renewing the same rejected token over the wire: one /token call.
func TestCacheWireRenewCoalesces(t *testing.T) {
	srv := dxtratest.NewServer(dxtratest.Options{})
	defer srv.Close()
	w := startWireCache(t, srv, srv.NewPAT())
	tok := w.nextToken(t, Token{})
	var wg sync.WaitGroup
	got := make([]Token, 50)
	for i := range got {
		wg.Go(func() {
			var err error
			if got[i], err = w.c.Renew(context.Background(), tok.Value.Reveal()); err != nil {
				t.Errorf("Renew() error = %v", err)
			}
		})
	}
	wg.Wait()
	if n := srv.Calls(dxtratest.TokenRefresh); n != 1 {
		t.Errorf("%d /token calls for 50 Renew; want 1", n)
	}
	for _, g := range got {
		if g.Value.Equal(tok.Value) {
			t.Errorf("Renew() returned the rejected token")
			break
		}
	}
}
