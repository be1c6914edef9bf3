package reliability

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// waitFor waits until the recorded auth calls satisfy cond and returns them.
func (a *authFront) waitFor(t *testing.T, timeout time.Duration, what string, cond func([]authCall) bool) []authCall {
	t.Helper()
	var calls []authCall
	eventually(t, timeout, what, func() bool {
		calls = a.Calls()
		return cond(calls)
	})
	return calls
}

func (c authCall) String() string {
	return fmt.Sprintf("%s %d at %s", c.ep, c.status, c.at.Format("15:04:05.000"))
}

// watchReady polls /readyz every 50 ms until the test ends and counts the answers that
// were not 200.
func watchReady(t *testing.T, p *proc) (notReady func() int64) {
	var bad atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if s, _ := readyz(p.Admin); s != http.StatusOK {
				bad.Add(1)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return func() int64 { stop(); return bad.Load() }
}

// TestAuthOutageShorterThanTokenLife: the auth service is down (both endpoints answer
// 503) for longer than a renewal period (10 s) but shorter than the token's life (20 s).
// The proxy keeps serving the token it holds: no request fails and /readyz stays 200;
// the failed renewal is retried with backoff on /token (not the PAT) and succeeds once
// auth is back.
func TestAuthOutageShorterThanTokenLife(t *testing.T) {
	t.Parallel()
	const ttl, refreshBefore = 20 * time.Second, 10 * time.Second
	fake := newFake(t, dxtratest.Options{AccessTokenTTL: ttl})
	front := newAuthFront(t, fake)
	p := startBinary(t, proxyEnv(fake, front, fake.NewPAT(), "DXTRA_REFRESH_BEFORE", refreshBefore.String()))
	waitReady(t, p)
	issued := front.Calls()[0].at

	fake.SetDown(dxtratest.SignInPAT, true)
	fake.SetDown(dxtratest.TokenRefresh, true)
	down := time.Now()
	notReady := watchReady(t, p)
	_, stopLoad := startLoad(t, p, 2)

	// Down until two renewal attempts (the scheduled one and its first retry) failed.
	front.waitFor(t, 2*ttl, "two failed renewal attempts", func(cs []authCall) bool {
		failed := 0
		for _, c := range cs {
			if c.status == http.StatusServiceUnavailable {
				failed++
			}
		}
		return failed >= 2
	})
	fake.SetDown(dxtratest.SignInPAT, false)
	fake.SetDown(dxtratest.TokenRefresh, false)
	up := time.Now()
	calls := front.waitFor(t, ttl, "a successful renewal after the outage", func(cs []authCall) bool {
		return cs[len(cs)-1].status == http.StatusOK && len(cs) > 1
	})
	res := stopLoad()
	ok, failed, errs := res.counts()
	outage := up.Sub(down)
	t.Logf("token issued %s; outage %s; auth calls %v; %d requests", issued.Format("15:04:05.000"), outage.Round(time.Millisecond), calls, ok+failed)

	if outage <= refreshBefore || outage >= ttl {
		t.Fatalf("the outage lasted %s; the scenario needs it between the renewal period %s and the token life %s", outage, refreshBefore, ttl)
	}
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the outage; want 0. First: %q", failed, ok+failed, errs)
	}
	if ok == 0 {
		t.Errorf("no request succeeded during the outage")
	}
	if n := notReady(); n != 0 {
		t.Errorf("/readyz answered non-200 %d times during an outage shorter than the token's life; want 0", n)
	}
	for i, c := range calls[1:] {
		if c.ep != dxtratest.TokenRefresh {
			t.Errorf("auth call %d during/after the outage went to %s; want /token only (the refresh token is still good)", i+1, c.ep)
		}
		if i > 0 && c.at.Sub(calls[i].at) < time.Second {
			t.Errorf("auth calls %d and %d only %s apart; want backoff of at least 1 s", i, i+1, c.at.Sub(calls[i].at))
		}
	}
	m := scrape(t, p.Admin)
	if got, want := m.get("dxtra_proxy_token_renewals_total", `grant="refresh_token"`, `result="failure"`), float64(len(calls)-2); got != want {
		t.Errorf("dxtra_proxy_token_renewals_total{refresh_token,failure} = %v; want %v", got, want)
	}
}

// TestAuthOutageLongerThanTokenLife: the auth service stays down past the token's
// expiry. /readyz turns 503 naming the expired token; requests wait for a token (10 s)
// and then get 503 token-unavailable as a GraphQL error with Retry-After; attempts back
// off exponentially (never faster than 1 s); once auth returns, the proxy recovers at
// its next scheduled attempt — within one backoff step.
func TestAuthOutageLongerThanTokenLife(t *testing.T) {
	t.Parallel()
	fake := newFake(t, dxtratest.Options{AccessTokenTTL: 2 * time.Second})
	front := newAuthFront(t, fake)
	p := startBinary(t, proxyEnv(fake, front, fake.NewPAT()))
	waitReady(t, p)

	fake.SetDown(dxtratest.SignInPAT, true)
	fake.SetDown(dxtratest.TokenRefresh, true)
	var reason string
	eventually(t, 10*time.Second, "/readyz to turn 503 after the token expired", func() bool {
		var s int
		s, reason = readyz(p.Admin)
		return s == http.StatusServiceUnavailable
	})
	if !strings.Contains(reason, "expired") {
		t.Errorf("/readyz body = %q; want it to say the token expired", reason)
	}
	if m := scrape(t, p.Admin); m.get("dxtra_proxy_ready") != 0 {
		t.Errorf("dxtra_proxy_ready = %v while no token is held; want 0", m.get("dxtra_proxy_ready"))
	}

	// Two callers without a token: a plain one and an Apollo Client 4 style one.
	c, _ := newClient(t, false)
	var wg sync.WaitGroup
	for _, accept := range []string{"", "application/graphql-response+json"} {
		wg.Go(func() {
			start := time.Now()
			hdr := map[string]string{"Content-Type": "application/json"}
			wantCT := "application/json"
			if accept != "" {
				hdr["Accept"], wantCT = accept, accept
			}
			status, h, body := do(t, c, http.MethodPost, p.URL(graphqlPath), graphqlQuery, hdr)
			waited := time.Since(start)
			if status != http.StatusServiceUnavailable || errorCode(body) != "token-unavailable" {
				t.Errorf("request without a token (Accept %q) = %d %s; want 503 token-unavailable", accept, status, body)
			}
			if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra <= 0 {
				t.Errorf("Retry-After = %q; want a positive number of seconds", h.Get("Retry-After"))
			}
			if ct := h.Get("Content-Type"); ct != wantCT {
				t.Errorf("Content-Type = %q; want %q", ct, wantCT)
			}
			if waited < 9*time.Second || waited > 13*time.Second {
				t.Errorf("the request was answered after %s; want it to wait about 10 s for a token", waited)
			}
		})
	}
	wg.Wait()

	fake.SetDown(dxtratest.SignInPAT, false)
	fake.SetDown(dxtratest.TokenRefresh, false)
	up := time.Now()
	eventually(t, 70*time.Second, "/readyz 200 after auth returned", func() bool {
		s, _ := readyz(p.Admin)
		return s == http.StatusOK
	})
	ready := time.Now()
	if err := queryOnce(context.Background(), c, p); err != nil {
		t.Errorf("request after recovery: %v", err)
	}

	calls := front.Calls()
	var failedCalls []authCall
	var next authCall
	for _, cl := range calls[1:] {
		if cl.at.Before(up) {
			if cl.status != http.StatusServiceUnavailable {
				t.Fatalf("auth call %v during the outage; want 503", cl)
			}
			failedCalls = append(failedCalls, cl)
		} else if next.at.IsZero() {
			next = cl
		}
	}
	t.Logf("failed attempts: %v; auth back at %s; next attempt %v; ready at %s (%s after auth returned)",
		failedCalls, up.Format("15:04:05.000"), next, ready.Format("15:04:05.000"), ready.Sub(up).Round(time.Millisecond))
	if len(failedCalls) < 3 {
		t.Fatalf("only %d failed attempts during a >10 s outage; want at least 3", len(failedCalls))
	}
	for i, cl := range failedCalls {
		if cl.ep != dxtratest.TokenRefresh {
			t.Errorf("attempt %v during the outage; want /token only", cl)
		}
		if i > 0 && cl.at.Sub(failedCalls[i-1].at) < time.Second {
			t.Errorf("attempts %v and %v less than 1 s apart: no backoff", failedCalls[i-1], cl)
		}
	}
	if next.status != http.StatusOK {
		t.Fatalf("first attempt after auth returned = %v; want 200", next)
	}
	// Backoff doubles with jitter within [base/2, base]: the step after a gap g is at
	// most 4g, and never more than the 60 s cap.
	last := failedCalls[len(failedCalls)-1]
	lastGap := last.at.Sub(failedCalls[len(failedCalls)-2].at)
	step := next.at.Sub(last.at)
	if maxStep := min(4*lastGap, 60*time.Second) + 500*time.Millisecond; step > maxStep {
		t.Errorf("the attempt after auth returned came %s after the previous one (previous gap %s); want at most %s (one backoff step)", step, lastGap, maxStep)
	}
	if d := ready.Sub(next.at); d > time.Second {
		t.Errorf("ready %s after the successful attempt; want promptly", d)
	}
	if d := ready.Sub(up); d > min(4*lastGap, 60*time.Second)+time.Second {
		t.Errorf("recovery took %s after auth returned; want within one backoff step (≤ %s)", d, min(4*lastGap, 60*time.Second))
	}
}

// TestRateLimitedRefreshBacksOff: /token answers 429 (empty body, like Hasura Auth).
// The next attempt waits at least 5 s (the 429 floor, although plain backoff would be
// 1–2 s), a Retry-After longer than that is honoured, the PAT is not exchanged instead,
// and the renewal succeeds once the limit is over.
func TestRateLimitedRefreshBacksOff(t *testing.T) {
	t.Parallel()
	fake := newFake(t, dxtratest.Options{AccessTokenTTL: 2 * time.Second})
	front := newAuthFront(t, fake)
	p := startBinary(t, proxyEnv(fake, front, fake.NewPAT()))
	waitReady(t, p)
	fake.FailNext(dxtratest.TokenRefresh, 1, http.StatusTooManyRequests, "")

	calls := front.waitCalls(t, 2, 10*time.Second)
	if c := calls[1]; c.ep != dxtratest.TokenRefresh || c.status != http.StatusTooManyRequests {
		t.Fatalf("second auth call = %v; want the first renewal, answered 429", c)
	}
	fake.FailNext(dxtratest.TokenRefresh, 1, http.StatusTooManyRequests, "7")
	calls = front.waitCalls(t, 4, 30*time.Second)
	t.Logf("auth calls: %v", calls)
	a, b, c := calls[1], calls[2], calls[3]
	if b.ep != dxtratest.TokenRefresh || b.status != http.StatusTooManyRequests || b.retryAfter != "7" {
		t.Fatalf("third auth call = %v (Retry-After %q); want /token answered 429 with Retry-After 7", b, b.retryAfter)
	}
	if c.ep != dxtratest.TokenRefresh || c.status != http.StatusOK {
		t.Fatalf("fourth auth call = %v; want /token answered 200", c)
	}
	if gap := b.at.Sub(a.at); gap < 5*time.Second || gap > 6500*time.Millisecond {
		t.Errorf("after a 429 on /token the next attempt came %s later; want 5 s (the 429 floor)", gap)
	}
	if gap := c.at.Sub(b.at); gap < 7*time.Second || gap > 8500*time.Millisecond {
		t.Errorf("after a 429 with Retry-After: 7 the next attempt came %s later; want 7 s", gap)
	}
	waitReady(t, p)
	m := scrape(t, p.Admin)
	if got := m.get("dxtra_proxy_token_renewals_total", `grant="refresh_token"`, `result="failure"`); got != 2 {
		t.Errorf("dxtra_proxy_token_renewals_total{refresh_token,failure} = %v; want 2", got)
	}
}

// TestRateLimitedPATExchangeBacksOff: the PAT exchange at start-up answers 429. The next
// /signin/pat call waits at least 30 s (every call counts against a brute-force limit
// of 10 per 5 min); meanwhile the proxy is not ready and callers get 503
// token-unavailable after waiting; after the wait the exchange succeeds.
func TestRateLimitedPATExchangeBacksOff(t *testing.T) {
	t.Parallel()
	fake := newFake(t, dxtratest.Options{})
	front := newAuthFront(t, fake)
	fake.FailNext(dxtratest.SignInPAT, 1, http.StatusTooManyRequests, "")
	p := startBinary(t, proxyEnv(fake, front, fake.NewPAT()))

	calls := front.waitCalls(t, 1, 10*time.Second)
	if c := calls[0]; c.ep != dxtratest.SignInPAT || c.status != http.StatusTooManyRequests {
		t.Fatalf("first auth call = %v; want /signin/pat answered 429", c)
	}
	if s, body := readyz(p.Admin); s != http.StatusServiceUnavailable {
		t.Errorf("/readyz while rate limited = %d %q; want 503", s, body)
	}
	c, _ := newClient(t, false)
	if status, _, body := do(t, c, http.MethodPost, p.URL(graphqlPath), graphqlQuery, nil); status != http.StatusServiceUnavailable || errorCode(body) != "token-unavailable" {
		t.Errorf("request while rate limited = %d %s; want 503 token-unavailable", status, body)
	}
	calls = front.waitCalls(t, 2, 45*time.Second)
	a, b := calls[0], calls[1]
	t.Logf("auth calls: %v", calls)
	if b.ep != dxtratest.SignInPAT || b.status != http.StatusOK {
		t.Fatalf("second auth call = %v; want /signin/pat answered 200", b)
	}
	if gap := b.at.Sub(a.at); gap < 30*time.Second || gap > 32*time.Second {
		t.Errorf("after a 429 on /signin/pat the next attempt came %s later; want 30 s", gap)
	}
	eventually(t, 2*time.Second, "/readyz 200 after the exchange", func() bool {
		s, _ := readyz(p.Admin)
		return s == http.StatusOK
	})
	if err := queryOnce(context.Background(), c, p); err != nil {
		t.Errorf("request after the exchange: %v", err)
	}
}

// TestRevokedPATIsTerminal: the PAT is deleted (and, as the fake's knob does, the
// refresh tokens issued from it). At the next renewal /token is refused, the PAT
// exchange answers invalid-pat, and the proxy turns not ready naming invalid-pat,
// logs it once, and does not hammer the auth service: no further /token call and at
// most one /signin/pat retry in the next 5 s (terminal failures retry every 60 s).
func TestRevokedPATIsTerminal(t *testing.T) {
	t.Parallel()
	fake := newFake(t, dxtratest.Options{AccessTokenTTL: 2 * time.Second})
	front := newAuthFront(t, fake)
	pat := fake.NewPAT()
	p := startBinary(t, proxyEnv(fake, front, pat))
	waitReady(t, p)
	fake.RevokePAT(pat)
	revoked := len(front.Calls())

	var body string
	eventually(t, 10*time.Second, "/readyz 503 naming invalid-pat", func() bool {
		var s int
		s, body = readyz(p.Admin)
		return s == http.StatusServiceUnavailable && strings.Contains(body, "invalid-pat")
	})
	calls := front.Calls()[revoked:]
	if len(calls) != 2 || calls[0].ep != dxtratest.TokenRefresh || calls[0].status != http.StatusUnauthorized ||
		calls[1].ep != dxtratest.SignInPAT || calls[1].status != http.StatusUnauthorized {
		t.Fatalf("auth calls after the revocation = %v; want /token 401 then /signin/pat 401", calls)
	}
	terminal := len(front.Calls())
	consistently(t, 5*time.Second, "no hot loop after invalid-pat", func() bool {
		nPAT, nToken := 0, 0
		for _, c := range front.Calls()[terminal:] {
			switch c.ep {
			case dxtratest.SignInPAT:
				nPAT++
			case dxtratest.TokenRefresh:
				nToken++
			}
		}
		return nPAT <= 1 && nToken == 0
	})
	if s, b := readyz(p.Admin); s != http.StatusServiceUnavailable || !strings.Contains(b, "invalid-pat") {
		t.Errorf("/readyz 5 s later = %d %q; want still 503 naming invalid-pat", s, b)
	}
	m := scrape(t, p.Admin)
	if m.get("dxtra_proxy_ready") != 0 {
		t.Errorf("dxtra_proxy_ready = %v; want 0", m.get("dxtra_proxy_ready"))
	}
	if n := strings.Count(p.Stderr.String(), `"level":"error"`); n != 1 {
		t.Errorf("%d error-level log lines; want the refused PAT logged exactly once", n)
	}
}
