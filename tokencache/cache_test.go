package tokencache

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
)

func synctestWait() { synctest.Wait() }

const s = time.Second

func grants(calls []call) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.String())
	}
	return out
}

func TestNewValidates(t *testing.T) {
	pat := func() (Secret, error) { return NewSecret(patA), nil }
	tests := []struct {
		name string
		opts Options
	}{
		{"no PAT", Options{Exchanger: HTTPExchanger{}}},
		{"no exchanger", Options{PAT: pat}},
		{"negative RefreshBefore", Options{PAT: pat, Exchanger: HTTPExchanger{}, RefreshBefore: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.opts); err == nil {
				t.Errorf("New() error = nil; want one")
			}
		})
	}
}

// The loop exchanges the PAT once, then renews through /token at
// expiry − min(RefreshBefore, lifetime/2), never touching /signin/pat again.
func TestRunRenewsThroughRefreshToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, nil)
		first := h.token()
		if got, want := first.Expiry.Sub(h.start), 900*s; got != want {
			t.Errorf("Expiry = start+%v; want start+%v", got, want)
		}
		h.sleepUntil(time.Hour)
		want := []string{"pat@0s", "refresh_token@13m0s", "refresh_token@26m0s", "refresh_token@39m0s", "refresh_token@52m0s"}
		if diff := cmp.Diff(want, grants(h.auth.callLog())); diff != "" {
			t.Errorf("calls mismatch (-want +got):\n%s", diff)
		}
		if tok := h.token(); tok.Value.Equal(first.Value) || !tok.IssuedAt.Equal(h.start.Add(52*time.Minute)) {
			t.Errorf("Token() = issued %v; want the 52m token", tok.IssuedAt.Sub(h.start))
		}
		if diff := cmp.Diff([]bool{true}, h.readyEvents()); diff != "" {
			t.Errorf("OnReady events mismatch (-want +got):\n%s", diff)
		}
		wantRenewals := []string{"pat:true", "refresh_token:true", "refresh_token:true", "refresh_token:true", "refresh_token:true"}
		if diff := cmp.Diff(wantRenewals, h.renewalEvents()); diff != "" {
			t.Errorf("OnRenewal events mismatch (-want +got):\n%s", diff)
		}
		if n := h.logs.FilterMessage("token renewed").Len(); n != 5 {
			t.Errorf("%d \"token renewed\" logs; want 5", n)
		}
		entry := h.logs.FilterMessage("token renewed").All()[0]
		if got := entry.ContextMap()["token"]; got != first.Value.Fingerprint() {
			t.Errorf("logged token = %v; want fingerprint %s", got, first.Value.Fingerprint())
		}
	})
}

func TestRefreshRefusedFallsBackToPAT(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"401 invalid-refresh-token", httpErr(GrantRefreshToken, 401, "invalid-refresh-token"),
			[]string{"pat@0s", "refresh_token@13m0s", "pat@13m0s", "refresh_token@26m0s"}},
		{"concealed 400", httpErr(GrantRefreshToken, 400, "invalid-request"),
			[]string{"pat@0s", "refresh_token@13m0s", "pat@13m0s", "refresh_token@26m0s"}},
		{"validator 400", httpErr(GrantRefreshToken, 400, "request-validation-error"),
			[]string{"pat@0s", "refresh_token@13m0s", "pat@13m0s", "refresh_token@26m0s"}},
		{"429 retries /token, no PAT", httpErr(GrantRefreshToken, 429, ""),
			[]string{"pat@0s", "refresh_token@13m0s", "refresh_token@13m5s", "refresh_token@26m5s"}},
		{"network error retries /token, no PAT", &ExchangeError{Grant: GrantRefreshToken, Err: errors.New("reset")},
			nil}, // times are jittered: checked below
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startHarness(t, nil)
				h.auth.failNext(GrantRefreshToken, tt.err)
				h.sleepUntil(27 * time.Minute)
				got := h.auth.callLog()
				if tt.want != nil {
					if diff := cmp.Diff(tt.want, grants(got)); diff != "" {
						t.Errorf("calls mismatch (-want +got):\n%s", diff)
					}
					return
				}
				if len(got) != 4 || got[2].grant != GrantRefreshToken || got[2].at < 13*time.Minute+s || got[2].at >= 13*time.Minute+2*s {
					t.Errorf("calls = %v; want pat, refresh@13m, refresh 1–2 s later, refresh", got)
				}
			})
		})
	}
}

// Every /token call carries the newest refresh token; a refused or rotated-out one is
// never sent again (the fake records misuse; the harness fails the test on any).
func TestRefreshTokenRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, func(_ *harness, o *Options) { o.RefreshBefore = 10 * time.Minute })
		h.auth.failNext(GrantRefreshToken, nil, httpErr(GrantRefreshToken, 401, "invalid-refresh-token"))
		h.sleepUntil(2 * time.Hour)
		calls := h.auth.callLog()
		seen := map[string]bool{}
		for _, c := range calls {
			if c.grant != GrantRefreshToken {
				continue
			}
			if seen[c.cred] {
				t.Errorf("refresh token %s sent twice", NewSecret(c.cred))
			}
			seen[c.cred] = true
		}
		if got := h.auth.count(GrantPAT); got != 2 {
			t.Errorf("%d PAT exchanges; want 2 (start, after the refusal)", got)
		}
		if len(seen) < 10 {
			t.Errorf("%d refreshes in 2 h; want ≥ 10", len(seen))
		}
	})
}

// 200 concurrent Renew calls for the same rejected token cost exactly one exchange;
// a second burst inside 10 s costs none; after 10 s one more.
func TestRenewCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, nil)
		old := h.token()
		h.sleepUntil(time.Minute)
		h.auth.hold()
		renewAll := func(rejected string) []Token {
			toks := make([]Token, 200)
			var wg sync.WaitGroup
			for i := range toks {
				wg.Go(func() {
					tok, err := h.c.Renew(context.Background(), rejected)
					if err != nil {
						t.Errorf("Renew() error = %v", err)
					}
					toks[i] = tok
				})
			}
			synctest.Wait()
			if h.auth.gate != nil {
				h.auth.release()
			}
			wg.Wait()
			return toks
		}
		toks := renewAll(old.Value.Reveal())
		if got := h.auth.count(GrantRefreshToken); got != 1 {
			t.Fatalf("%d /token calls for 200 Renew; want 1", got)
		}
		renewed := toks[0]
		for _, tok := range toks {
			if !tok.Value.Equal(renewed.Value) || tok.Value.Equal(old.Value) {
				t.Fatalf("Renew() = %v; want the one new token %v", tok.Value, renewed.Value)
			}
		}

		// The new token is rejected too, 5 s later: inside the window, passed through.
		h.sleepUntil(time.Minute + 5*s)
		for _, tok := range renewAll(renewed.Value.Reveal()) {
			if !tok.Value.Equal(renewed.Value) {
				t.Fatalf("Renew() inside the window = %v; want the rejected token back", tok.Value)
			}
		}
		if got := h.auth.count(GrantRefreshToken); got != 1 {
			t.Fatalf("%d /token calls; want still 1 inside the 10 s window", got)
		}

		// An old rejected token: the current one comes back at once.
		if tok, err := h.c.Renew(context.Background(), old.Value.Reveal()); err != nil || !tok.Value.Equal(renewed.Value) {
			t.Errorf("Renew(old) = %v, %v; want the current token", tok.Value, err)
		}

		h.sleepUntil(time.Minute + 10*s)
		toks = renewAll(renewed.Value.Reveal())
		if got := h.auth.count(GrantRefreshToken); got != 2 {
			t.Fatalf("%d /token calls; want 2 after the window", got)
		}
		if toks[0].Value.Equal(renewed.Value) {
			t.Errorf("Renew() after the window returned the rejected token")
		}
	})
}

func TestRenewJoinsLoopFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, nil)
		old := h.token()
		h.auth.hold()
		h.sleepUntil(13 * time.Minute) // the loop's /token call is now held
		var got Token
		done := make(chan struct{})
		go func() {
			defer close(done)
			got, _ = h.c.Renew(context.Background(), old.Value.Reveal())
		}()
		synctest.Wait()
		h.auth.release()
		<-done
		if n := h.auth.count(GrantRefreshToken); n != 1 {
			t.Errorf("%d /token calls; want 1 (Renew joined the loop's)", n)
		}
		if got.Value.Equal(old.Value) || got.Value.IsZero() {
			t.Errorf("Renew() = %v; want the loop's new token", got.Value)
		}
	})
}

func TestRenewFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, nil)
		old := h.token()
		h.auth.failNext(GrantRefreshToken, &ExchangeError{Grant: GrantRefreshToken, Status: 503, RetryAfter: time.Minute})
		if _, err := h.c.Renew(context.Background(), old.Value.Reveal()); err == nil {
			t.Fatal("Renew() error = nil; want the failure")
		}
		// Inside the 10 s window: the rejected token is handed back, no call.
		h.sleepUntil(5 * s)
		if tok, err := h.c.Renew(context.Background(), old.Value.Reveal()); err != nil || !tok.Value.Equal(old.Value) {
			t.Errorf("Renew() inside the window = %v, %v; want the rejected token back", tok.Value, err)
		}
		// Backing off (Retry-After 60 s): a further Renew fails without a call.
		h.sleepUntil(11 * s)
		n := len(h.auth.callLog())
		if _, err := h.c.Renew(context.Background(), old.Value.Reveal()); err == nil {
			t.Error("Renew() while backing off: error = nil; want one")
		}
		if got := len(h.auth.callLog()); got != n {
			t.Errorf("Renew() while backing off made %d calls; want 0", got-n)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		h.auth.hold()
		h.sleepUntil(61 * s)
		if _, err := h.c.Renew(ctx, old.Value.Reveal()); !errors.Is(err, context.Canceled) {
			t.Errorf("Renew(cancelled ctx) error = %v; want context.Canceled", err)
		}
		h.auth.release()
	})
}

func TestRateLimitFloors(t *testing.T) {
	t.Run("signin 429 waits 30 s", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, func(h *harness, _ *Options) { h.auth.failNext(GrantPAT, httpErr(GrantPAT, 429, "")) })
			h.sleepUntil(10 * s)
			if _, err := h.c.Renew(context.Background(), ""); err == nil {
				t.Error("Renew() inside the 429 floor: error = nil; want one")
			}
			tok := h.token()
			want := []string{"pat@0s", "pat@30s"}
			if diff := cmp.Diff(want, grants(h.auth.callLog())); diff != "" {
				t.Errorf("calls mismatch (-want +got):\n%s", diff)
			}
			if !tok.IssuedAt.Equal(h.start.Add(30 * s)) {
				t.Errorf("token issued at %v; want 30s", tok.IssuedAt.Sub(h.start))
			}
		})
	})
	t.Run("token 429 waits 5 s", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, nil)
			h.auth.failNext(GrantRefreshToken, httpErr(GrantRefreshToken, 429, ""), httpErr(GrantRefreshToken, 429, ""))
			h.sleepUntil(14 * time.Minute)
			want := []string{"pat@0s", "refresh_token@13m0s", "refresh_token@13m5s", "refresh_token@13m10s"}
			if diff := cmp.Diff(want, grants(h.auth.callLog())); diff != "" {
				t.Errorf("calls mismatch (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("PAT change inside the signin 429 floor waits for it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, func(h *harness, _ *Options) {
				h.auth.failNext(GrantPAT, httpErr(GrantPAT, 429, ""))
				h.auth.addPAT(patB)
			})
			h.sleepUntil(10 * s)
			h.setPAT(patB)
			h.c.PATChanged()
			h.token()
			want := []string{"pat@0s", "pat@30s"}
			if diff := cmp.Diff(want, grants(h.auth.callLog())); diff != "" {
				t.Errorf("calls mismatch (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("refused token, then 429 on the PAT fallback waits 30 s", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, func(h *harness, _ *Options) {
				h.auth.failNext(GrantRefreshToken, httpErr(GrantRefreshToken, 401, "invalid-refresh-token"))
				h.auth.failNext(GrantPAT, nil, httpErr(GrantPAT, 429, ""))
			})
			h.sleepUntil(14 * time.Minute)
			want := []string{"pat@0s", "refresh_token@13m0s", "pat@13m0s", "pat@13m30s"}
			if diff := cmp.Diff(want, grants(h.auth.callLog())); diff != "" {
				t.Errorf("calls mismatch (-want +got):\n%s", diff)
			}
		})
	})
}

func TestRetryAfterHonoured(t *testing.T) {
	tests := []struct {
		name  string
		grant string
		err   *ExchangeError
		want  []string
	}{
		{"503 on token, Retry-After 90 s", GrantRefreshToken, &ExchangeError{Grant: GrantRefreshToken, Status: 503, RetryAfter: 90 * s},
			[]string{"pat@0s", "refresh_token@13m0s", "refresh_token@14m30s"}},
		{"429 on signin, Retry-After 2 min", GrantPAT, &ExchangeError{Grant: GrantPAT, Status: 429, RetryAfter: 2 * time.Minute},
			[]string{"pat@0s", "pat@2m0s", "refresh_token@15m0s"}},
		{"429 on signin, Retry-After 5 min", GrantPAT, &ExchangeError{Grant: GrantPAT, Status: 429, RetryAfter: 5 * time.Minute},
			[]string{"pat@0s", "pat@5m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startHarness(t, func(h *harness, _ *Options) { h.auth.failNext(tt.grant, tt.err) })
				h.sleepUntil(15 * time.Minute)
				if diff := cmp.Diff(tt.want, grants(h.auth.callLog())); diff != "" {
					t.Errorf("calls mismatch (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// The current token is served through a 2-minute auth outage, never at or after its
// UsableUntil; the loop backs off (no hot loop) and recovers once auth is back.
func TestTokenServedThroughOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, nil)
		first := h.token()
		if got, want := first.UsableUntil.Sub(h.start), 895*s; got != want {
			t.Fatalf("UsableUntil = start+%v; want start+%v", got, want)
		}
		h.sleepUntil(12 * time.Minute)
		h.auth.setDown(true) // from 12m to 15m: the renewal at 13m fails
		for at := 12 * time.Minute; at < 15*time.Minute; at += 250 * time.Millisecond {
			h.sleepUntil(at)
			tok, ok := h.probe()
			usable := at < 895*s
			if ok != usable {
				t.Fatalf("at %v: Token() ok = %v; want %v", at, ok, usable)
			}
			if ok && !tok.Value.Equal(first.Value) {
				t.Fatalf("at %v: Token() = %v; want the first token", at, tok.Value)
			}
			if ready, reason := h.c.Ready(); ready != usable {
				t.Fatalf("at %v: Ready() = %v, %q; want %v", at, ready, reason, usable)
			}
		}
		_, reason := h.c.Ready()
		if want := "token expired; auth service unreachable: exchange refresh_token: connect: connection refused"; reason != want {
			t.Errorf("Ready() reason = %q; want %q", reason, want)
		}
		if n := h.auth.count(GrantRefreshToken); n < 5 || n > 10 {
			t.Errorf("%d /token calls in a 2-min outage; want 5–10 (exponential backoff)", n)
		}
		if n := h.auth.count(GrantPAT); n != 1 {
			t.Errorf("%d PAT exchanges; want 1 (outage is transient)", n)
		}
		if n := h.logs.FilterMessage("token renewal failed").FilterField(zap.String("grant", GrantRefreshToken)).Len(); n < 5 {
			t.Errorf("%d warnings; want one per failed attempt", n)
		}

		// Auth comes back: a waiting Token returns within the backoff (≤ 60 s).
		h.auth.setDown(false)
		tok := h.token()
		if tok.Value.Equal(first.Value) || h.elapsed() > 16*time.Minute {
			t.Errorf("Token() = %v at %v; want a new token by 16m", tok.Value, h.elapsed())
		}
		synctest.Wait() // hooks run after the token is published
		if diff := cmp.Diff([]bool{true, false, true}, h.readyEvents()); diff != "" {
			t.Errorf("OnReady events mismatch (-want +got):\n%s", diff)
		}
	})
}

// A refused PAT: not ready with the server's code, retried every 60 s (counted over
// 10 min), logged once at error level; a PAT change is exchanged at once.
func TestTerminalInvalidPAT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, func(h *harness, _ *Options) { h.setPAT(patB) }) // unknown to the auth service
		h.sleepUntil(10 * time.Minute)
		if n := h.auth.count(GrantPAT); n != 11 {
			t.Errorf("%d PAT exchanges in 10 min; want 11 (one per 60 s)", n)
		}
		ready, reason := h.c.Ready()
		if want := "auth service refused the PAT: invalid-pat"; ready || reason != want {
			t.Errorf("Ready() = %v, %q; want false, %q", ready, reason, want)
		}
		if n := h.logs.FilterLevelExact(zap.ErrorLevel).Len(); n != 1 {
			t.Errorf("%d error logs; want 1", n)
		}
		if e := h.logs.FilterLevelExact(zap.ErrorLevel).All(); len(e) == 1 && e[0].ContextMap()["error_code"] != "invalid-pat" {
			t.Errorf("error log fields = %v; want error_code invalid-pat", e[0].ContextMap())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*s)
		defer cancel()
		_, err := h.c.Token(ctx)
		if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "invalid-pat") {
			t.Errorf("Token() error = %v; want ErrNoToken naming invalid-pat", err)
		}
		if _, err := h.c.Renew(context.Background(), ""); err == nil {
			t.Error("Renew() error = nil; want the terminal failure")
		}
		if got := h.readyEvents(); len(got) != 0 {
			t.Errorf("OnReady events = %v; want none", got)
		}

		n := len(h.auth.callLog())
		at := h.elapsed()
		h.setPAT(patA)
		h.c.PATChanged()
		synctest.Wait()
		calls := h.auth.callLog()
		if len(calls) != n+1 || calls[n].at != at || calls[n].cred != patA {
			t.Fatalf("calls after PATChanged = %v; want one PAT exchange at %v", calls[n:], at)
		}
		if ready, reason := h.c.Ready(); !ready {
			t.Errorf("Ready() = false, %q; want true", reason)
		}
		if diff := cmp.Diff([]bool{true}, h.readyEvents()); diff != "" {
			t.Errorf("OnReady events mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestTerminalCodes(t *testing.T) {
	tests := []struct {
		name   string
		err    *ExchangeError
		reason string
	}{
		{"disabled-user", httpErr(GrantPAT, 401, "disabled-user"), "auth service refused the PAT: disabled-user"},
		{"unverified-user", httpErr(GrantPAT, 401, "unverified-user"), "auth service refused the PAT: unverified-user"},
		{"forbidden-anonymous", httpErr(GrantPAT, 403, "forbidden-anonymous"), "auth service refused the PAT: forbidden-anonymous"},
		{"concealed 400", httpErr(GrantPAT, 400, "invalid-request"), "auth service refused the PAT: invalid-request"},
		{"400 without a code", httpErr(GrantPAT, 400, ""), "auth service refused the PAT: HTTP 400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startHarness(t, func(h *harness, _ *Options) { h.auth.failNext(GrantPAT, tt.err, tt.err) })
				h.sleepUntil(30 * s)
				if ready, reason := h.c.Ready(); ready || reason != tt.reason {
					t.Errorf("Ready() = %v, %q; want false, %q", ready, reason, tt.reason)
				}
				h.sleepUntil(2*time.Minute + s)
				if diff := cmp.Diff([]string{"pat@0s", "pat@1m0s", "pat@2m0s"}, grants(h.auth.callLog())); diff != "" {
					t.Errorf("calls mismatch (-want +got):\n%s", diff)
				}
				if ready, reason := h.c.Ready(); !ready {
					t.Errorf("Ready() = false, %q; want true after the server accepts", reason)
				}
			})
		})
	}
}

func TestPATSourceError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail = true
		var mu sync.Mutex
		h := startHarness(t, func(_ *harness, o *Options) {
			next := o.PAT
			o.PAT = func() (Secret, error) {
				mu.Lock()
				defer mu.Unlock()
				if fail {
					return Secret{}, errors.New("open /run/secrets/pat: no such file")
				}
				return next()
			}
		})
		h.sleepUntil(5 * time.Minute)
		if ready, reason := h.c.Ready(); ready || reason != "cannot read the PAT: open /run/secrets/pat: no such file" {
			t.Errorf("Ready() = %v, %q; want the PAT source error", ready, reason)
		}
		if n := len(h.auth.callLog()); n != 0 {
			t.Errorf("%d calls; want none without a PAT", n)
		}
		if n := h.logs.FilterLevelExact(zap.ErrorLevel).Len(); n != 1 {
			t.Errorf("%d error logs; want 1", n)
		}
		mu.Lock()
		fail = false
		mu.Unlock()
		h.c.PATChanged()
		h.token()
		if got := h.elapsed(); got != 5*time.Minute {
			t.Errorf("token after PATChanged at %v; want at once (5m)", got)
		}
	})
}

// A PAT change: the new PAT is exchanged at once; the current token is served until
// the new one arrives; the old session's refresh token is never used again (the fake
// flags it); readiness follows the new PAT.
func TestPATChanged(t *testing.T) {
	t.Run("new PAT accepted", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, nil)
			old := h.token()
			h.sleepUntil(5 * time.Minute)
			h.auth.addPAT(patB)
			h.auth.retireAll()
			h.auth.hold()
			h.setPAT(patB)
			h.c.PATChanged()
			synctest.Wait()
			if tok, ok := h.probe(); !ok || !tok.Value.Equal(old.Value) {
				t.Errorf("Token() while the new PAT is exchanged = %v, %v; want the old token", tok.Value, ok)
			}
			h.auth.release()
			synctest.Wait()
			calls := h.auth.callLog()
			if last := calls[len(calls)-1]; last.grant != GrantPAT || last.cred != patB || last.at != 5*time.Minute {
				t.Errorf("last call = %v (%s); want the new PAT at 5m", last, NewSecret(last.cred))
			}
			tok := h.token()
			if tok.Value.Equal(old.Value) || !tok.IssuedAt.Equal(h.start.Add(5*time.Minute)) {
				t.Errorf("Token() = issued %v; want the new PAT's token", tok.IssuedAt.Sub(h.start))
			}
			h.sleepUntil(20 * time.Minute) // renewals use the new session only
			if n := h.auth.count(GrantRefreshToken); n != 1 {
				t.Errorf("%d /token calls; want 1 (at 18m, new session)", n)
			}
		})
	})
	t.Run("new PAT refused", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, nil)
			old := h.token()
			h.sleepUntil(5 * time.Minute)
			h.auth.retireAll()
			h.setPAT(patB) // not valid
			h.c.PATChanged()
			synctest.Wait()
			if ready, reason := h.c.Ready(); ready || !strings.Contains(reason, "invalid-pat") {
				t.Errorf("Ready() = %v, %q; want not ready: invalid-pat", ready, reason)
			}
			if tok, ok := h.probe(); !ok || !tok.Value.Equal(old.Value) {
				t.Errorf("Token() = %v, %v; want the old token until it expires", tok.Value, ok)
			}
			h.sleepUntil(895 * s)
			if _, ok := h.probe(); ok {
				t.Error("Token() returned a token at its UsableUntil")
			}
			if n := h.auth.count(GrantRefreshToken); n != 0 {
				t.Errorf("%d /token calls; want 0 (old session dropped)", n)
			}
		})
	})
	t.Run("change during a refresh drops its result", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, nil)
			h.token()
			h.auth.addPAT(patB)
			h.auth.hold()
			h.sleepUntil(13 * time.Minute) // /token in flight, held
			h.setPAT(patB)
			h.c.PATChanged()
			h.auth.retireAll()
			h.auth.release() // the old session's refresh completes; its result is dropped
			synctest.Wait()
			want := []string{"pat@0s", "refresh_token@13m0s", "pat@13m0s"}
			if diff := cmp.Diff(want, grants(h.auth.callLog())); diff != "" {
				t.Errorf("calls mismatch (-want +got):\n%s", diff)
			}
			h.sleepUntil(27 * time.Minute)
			if calls := h.auth.callLog(); len(calls) != 4 || calls[3].String() != "refresh_token@26m0s" {
				t.Errorf("calls = %v; want the new session refreshed at 26m", calls)
			}
		})
	})
}

// The PAT session is re-exchanged when it is 12 h old; a transient failure of that
// exchange keeps the old session (refresh) and retries at the next renewal.
func TestTwelveHourReexchange(t *testing.T) {
	t.Run("on time", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, nil)
			h.sleepUntil(12*time.Hour + 14*time.Minute)
			var pats []string
			for _, c := range h.auth.callLog() {
				if c.grant == GrantPAT {
					pats = append(pats, c.String())
				}
			}
			if diff := cmp.Diff([]string{"pat@0s", "pat@12h0m0s"}, pats); diff != "" {
				t.Errorf("PAT exchanges mismatch (-want +got):\n%s", diff)
			}
			if n := h.auth.count(GrantRefreshToken); n != 55+1 {
				t.Errorf("%d /token calls; want 56 (every 13 min, then the new session at 12h13m)", n)
			}
		})
	})
	t.Run("transient failure falls back to refresh", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, nil)
			h.sleepUntil(11*time.Hour + 59*time.Minute)
			h.auth.failNext(GrantPAT, httpErr(GrantPAT, 503, ""))
			h.sleepUntil(12*time.Hour + 14*time.Minute)
			calls := h.auth.callLog()
			var tail []string
			for _, c := range calls[len(calls)-3:] {
				tail = append(tail, c.String())
			}
			want := []string{"pat@12h0m0s", "refresh_token@12h0m0s", "pat@12h13m0s"}
			if diff := cmp.Diff(want, tail); diff != "" {
				t.Errorf("calls mismatch (-want +got):\n%s", diff)
			}
			if ready, reason := h.c.Ready(); !ready {
				t.Errorf("Ready() = false, %q; want true", reason)
			}
		})
	})
	t.Run("PAT revoked: cut off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startHarness(t, nil)
			h.sleepUntil(11*time.Hour + 59*time.Minute)
			h.auth.mu.Lock()
			delete(h.auth.validPATs, patA)
			h.auth.mu.Unlock()
			h.auth.retireAll() // the cache must stop refreshing the old session
			h.sleepUntil(12*time.Hour + 30*time.Minute)
			if ready, reason := h.c.Ready(); ready || reason != "auth service refused the PAT: invalid-pat" {
				t.Errorf("Ready() = %v, %q; want not ready: invalid-pat", ready, reason)
			}
			if _, ok := h.probe(); ok {
				t.Error("Token() returned a token 30 min after the PAT was refused")
			}
		})
	})
}

// A wall clock that jumps past the expiry (laptop sleep: timers did not fire) never
// yields the expired token, from Token or Renew, and the token is renewed at once.
func TestClockJumpNeverServesExpiredToken(t *testing.T) {
	tests := []struct {
		name string
		get  func(h *harness) (Token, error)
	}{
		{"Token", func(h *harness) (Token, error) { return h.token(), nil }},
		{"Renew", func(h *harness) (Token, error) { return h.c.Renew(context.Background(), "") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startHarness(t, nil)
				old := h.token()
				h.sleepUntil(time.Minute)
				h.offset.Store(int64(time.Hour))
				if ready, _ := h.c.Ready(); ready {
					t.Error("Ready() = true with only the expired token")
				}
				tok, err := tt.get(h)
				if err != nil || tok.Value.Equal(old.Value) || !tok.Usable(h.c.now()) {
					t.Errorf("%s() = %v, %v; want a fresh token", tt.name, tok.Value, err)
				}
				if at := h.elapsed(); at != time.Minute {
					t.Errorf("fresh token at %v; want at once (1m)", at)
				}
			})
		})
	}
}

func TestTokenWaitsForFirstToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, func(h *harness, _ *Options) { h.auth.hold() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*s)
		defer cancel()
		_, err := h.c.Token(ctx)
		if !errors.Is(err, ErrNoToken) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Token() error = %v; want ErrNoToken and DeadlineExceeded", err)
		}
		if !strings.Contains(err.Error(), "no token yet") {
			t.Errorf("Token() error = %q; want the reason", err)
		}
		if got := h.elapsed(); got != 10*s {
			t.Errorf("Token() returned after %v; want 10s", got)
		}
		if ready, reason := h.c.Ready(); ready || reason != "no token yet; exchanging the PAT" {
			t.Errorf("Ready() = %v, %q; want false, no token yet", ready, reason)
		}
		changed := h.c.Changed()
		got := make(chan Token)
		go func() { got <- h.token() }()
		synctest.Wait()
		h.auth.release()
		if tok := <-got; tok.Value.IsZero() {
			t.Error("Token() = zero token")
		}
		select {
		case <-changed:
		default:
			t.Error("Changed() channel not closed by the first token")
		}
	})
}

func TestTokenWithoutRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(Options{PAT: func() (Secret, error) { return NewSecret(patA), nil }, Exchanger: newFakeAuth(t, time.Now)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.Token(ctx); !errors.Is(err, ErrNoToken) {
			t.Errorf("Token() error = %v; want ErrNoToken", err)
		}
	})
}

func TestRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, nil)
		synctest.Wait()
		if err := h.c.Run(context.Background()); err == nil {
			t.Error("second Run() = nil; want an error")
		}
	})
}

func TestReadyRole(t *testing.T) {
	tests := []struct {
		name      string
		role      string
		roles     []string
		wantReady bool
		reason    string
	}{
		{"role allowed", "user", []string{"me", "user"}, true, ""},
		{"no role configured", "", []string{"me"}, true, ""},
		{"role not allowed", "x", []string{"me", "user"}, false, `role "x" is not among the token's allowed roles [me user]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startHarness(t, func(h *harness, o *Options) {
					o.Role = tt.role
					h.auth.roles = tt.roles
				})
				h.token()
				synctest.Wait() // hooks run after the token is published
				ready, reason := h.c.Ready()
				if ready != tt.wantReady || reason != tt.reason {
					t.Errorf("Ready() = %v, %q; want %v, %q", ready, reason, tt.wantReady, tt.reason)
				}
				if got := h.readyEvents(); tt.wantReady != slices.Contains(got, true) {
					t.Errorf("OnReady events = %v; want ready %v", got, tt.wantReady)
				}
			})
		})
	}
}

func TestExpiredTokenFromServerBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHarness(t, func(h *harness, _ *Options) {
			h.offset.Store(int64(time.Hour)) // our clock is an hour ahead of the auth service's
			h.auth.now = time.Now
		})
		h.sleepUntil(time.Minute)
		if n := len(h.auth.callLog()); n < 3 || n > 10 {
			t.Errorf("%d calls in 1 min with always-expired tokens; want backoff (3–10)", n)
		}
		if ready, reason := h.c.Ready(); ready || !strings.Contains(reason, "expired token") {
			t.Errorf("Ready() = %v, %q; want not ready: expired token", ready, reason)
		}
		// Renew joining an exchange that yields an expired token must not return it.
		h.auth.hold()
		h.sleepUntil(2 * time.Minute) // the loop's next attempt (backoff ≤ 60 s) is held
		var tok Token
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			tok, err = h.c.Renew(context.Background(), "")
		}()
		synctest.Wait()
		h.auth.release()
		<-done
		if !errors.Is(err, ErrNoToken) {
			t.Errorf("Renew() = %v, %v; want ErrNoToken, never the expired token", tok.Value, err)
		}
	})
}
