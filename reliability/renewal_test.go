package reliability

import (
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// TestRenewalUnderLoad: with 2 s access tokens and 32 clients hammering the proxy, every
// response is a 200 with the data, the upstream never receives an expired or otherwise
// invalid token (so nothing is replayed), and the background renewal runs about once a
// second (2 s tokens, renewed when half their life is left) through /token, as the
// renewal metric also says.
func TestRenewalUnderLoad(t *testing.T) {
	const (
		clients  = 32
		duration = 16 * time.Second
		ttl      = 2 * time.Second
	)
	fake := newFake(t, dxtratest.Options{AccessTokenTTL: ttl, RecordLimit: 1 << 20})
	p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT()))
	waitReady(t, p)

	before := scrape(t, p.Admin)
	tokenCalls0, patCalls0 := fake.Calls(dxtratest.TokenRefresh), fake.Calls(dxtratest.SignInPAT)
	apiCalls0 := fake.Calls(dxtratest.GraphQL)
	fake.ResetRequests()

	start := time.Now()
	_, stop := startLoad(t, p, clients)
	deadline := time.NewTimer(duration)
	<-deadline.C // the load's length, not a synchronisation
	res := stop()
	elapsed := time.Since(start)
	ok, failed, errs := res.counts()
	t.Logf("%d clients for %s: %d responses (%.0f/s), %d failed", clients, elapsed.Round(time.Millisecond), ok+failed, float64(ok+failed)/elapsed.Seconds(), failed)

	if failed != 0 {
		t.Errorf("%d of %d requests failed; first: %q", failed, ok+failed, errs)
	}
	if ok < 10*clients {
		t.Errorf("only %d requests succeeded in %s; the load did not run", ok, elapsed)
	}

	reqs := fake.Requests()
	invalid, tokens := 0, map[string]bool{}
	for _, r := range reqs {
		if !r.TokenValid {
			invalid++
		}
		tokens[r.Header.Get("Authorization")] = true
	}
	if invalid != 0 {
		t.Errorf("the upstream received %d of %d requests with an expired or invalid token; want 0", invalid, len(reqs))
	}
	if apiCalls := fake.Calls(dxtratest.GraphQL) - apiCalls0; apiCalls != ok+failed {
		t.Errorf("the upstream saw %d requests for %d client requests; want equal (no replays)", apiCalls, ok+failed)
	}

	renewals := fake.Calls(dxtratest.TokenRefresh) - tokenCalls0
	perSecond := float64(renewals) / elapsed.Seconds()
	t.Logf("%d renewals through /token in %s (%.2f/s), %d distinct tokens reached the upstream", renewals, elapsed.Round(time.Millisecond), perSecond, len(tokens))
	// 2 s tokens are renewed when 1 s of life is left: about once a second. Fewer than
	// 0.6/s cannot keep a usable token; more than 1.6/s is renewing too early or looping.
	if perSecond < 0.6 || perSecond > 1.6 {
		t.Errorf("renewal rate = %.2f/s (%d in %s); want about 1/s (0.6–1.6)", perSecond, renewals, elapsed)
	}
	if patCalls := fake.Calls(dxtratest.SignInPAT) - patCalls0; patCalls != 0 {
		t.Errorf("%d PAT exchanges during the load; want 0 (renewal goes through /token)", patCalls)
	}
	if len(tokens) < renewals-1 {
		t.Errorf("only %d distinct tokens reached the upstream across %d renewals; renewed tokens are not used", len(tokens), renewals)
	}

	after := scrape(t, p.Admin)
	delta := func(labels ...string) float64 {
		return after.get("dxtra_proxy_token_renewals_total", labels...) - before.get("dxtra_proxy_token_renewals_total", labels...)
	}
	if got := delta(`grant="refresh_token"`, `result="success"`); got != float64(renewals) {
		t.Errorf("dxtra_proxy_token_renewals_total{grant=refresh_token,result=success} grew by %v; the auth service counted %d /token calls", got, renewals)
	}
	if got := delta(`result="failure"`); got != 0 {
		t.Errorf("dxtra_proxy_token_renewals_total{result=failure} grew by %v; want 0", got)
	}
	if got := after.get("dxtra_proxy_upstream_retries_total"); got != 0 {
		t.Errorf("dxtra_proxy_upstream_retries_total = %v; want 0 (no token was rejected)", got)
	}
}

// TestRevokedAccessTokenMidLoad: the upstream starts rejecting the current access token
// while clients are busy (Hasura's 200 invalid-jwt, or a gateway's 401). The burst of
// rejections costs exactly one renewal; every rejected request is replayed with the new
// token; no client sees a failure.
func TestRevokedAccessTokenMidLoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gateway bool
		reason  string
	}{
		{name: "hasura 200 invalid-jwt", reason: `reason="invalid_jwt"`},
		{name: "gateway 401", gateway: true, reason: `reason="unauthorized"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t, dxtratest.Options{RecordLimit: 1 << 20}) // 900 s tokens: no scheduled renewal interferes
			fake.SetGatewayMode(tc.gateway)
			p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT()))
			waitReady(t, p)

			_, stop := startLoad(t, p, 16)
			eventually(t, 10*time.Second, "load to reach the upstream", func() bool { return fake.Calls(dxtratest.GraphQL) >= 100 })
			reqs := fake.Requests()
			old := reqs[len(reqs)-1].Header.Get("Authorization")
			tokenCalls0, patCalls0 := fake.Calls(dxtratest.TokenRefresh), fake.Calls(dxtratest.SignInPAT)
			fake.RevokeAccessToken(old[len("Bearer "):])
			revokedAt := len(fake.Requests())

			// Wait for the new token, then let a few hundred requests use it.
			var renewedAt int
			eventually(t, 10*time.Second, "a new token at the upstream", func() bool {
				reqs := fake.Requests()
				for i := revokedAt; i < len(reqs); i++ {
					if a := reqs[i].Header.Get("Authorization"); a != old && reqs[i].TokenValid {
						renewedAt = i
						return true
					}
				}
				return false
			})
			eventually(t, 20*time.Second, "load on the new token", func() bool { return len(fake.Requests()) > renewedAt+300 })
			res := stop()
			ok, failed, errs := res.counts()

			if failed != 0 {
				t.Errorf("%d of %d requests failed; first: %q", failed, ok+failed, errs)
			}
			if n := fake.Calls(dxtratest.TokenRefresh) - tokenCalls0; n != 1 {
				t.Errorf("/token calls after the revocation = %d; want exactly 1 (coalesced)", n)
			}
			if n := fake.Calls(dxtratest.SignInPAT) - patCalls0; n != 0 {
				t.Errorf("/signin/pat calls after the revocation = %d; want 0", n)
			}
			rejected := 0
			for _, r := range fake.Requests() {
				if !r.TokenValid {
					rejected++
					if a := r.Header.Get("Authorization"); a != old {
						t.Fatalf("the upstream rejected a request carrying a token other than the revoked one")
					}
				}
			}
			if rejected == 0 {
				t.Fatalf("no request carried the revoked token: the scenario did not happen")
			}
			m := scrape(t, p.Admin)
			if got := m.get("dxtra_proxy_upstream_retries_total", tc.reason); got != float64(rejected) {
				t.Errorf("dxtra_proxy_upstream_retries_total{%s} = %v; want %d (one replay per rejected request)", tc.reason, got, rejected)
			}
			if apiCalls := fake.Calls(dxtratest.GraphQL); apiCalls < ok+rejected {
				t.Errorf("the upstream saw %d requests; want at least %d successes + %d replays", apiCalls, ok, rejected)
			}
			t.Logf("%d requests, %d rejected and replayed, 1 renewal", ok+failed, rejected)
		})
	}
}
