package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// scrape reads the admin /metrics and returns the families by name.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels include
// every pair in want ("k=v"), or -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

// TestMetricsAfterKnownTraffic checks counter values, not just names, on the
// running program.
func TestMetricsAfterKnownTraffic(t *testing.T) {
	fake := newFake(t, dxtratest.Options{AccessTokenTTL: 4 * time.Second})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT()))
	waitReady(t, p)

	for range 3 {
		if status, body := do(t, http.DefaultClient, "POST", "http://"+p.Listen+"/v1/graphql", graphqlQuery, nil); status != 200 {
			t.Fatalf("POST: %d %s", status, body)
		}
	}
	if status, _ := do(t, http.DefaultClient, "GET", "http://"+p.Listen+"/v1/graphql", "", map[string]string{"X-Hasura-Role": "admin"}); status != 403 {
		t.Fatalf("disallowed role: %d; want 403", status)
	}
	m := scrape(t, p.Admin)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"dxtra_proxy_requests_total", []string{"code=200", "method=POST"}, 3},
		{"dxtra_proxy_requests_total", []string{"code=403", "method=GET"}, 1},
		{"dxtra_proxy_request_duration_seconds", []string{"code=200"}, 3},
		{"dxtra_proxy_upstream_retries_total", []string{"reason=invalid_jwt"}, 0},
		{"dxtra_proxy_token_renewals_total", []string{"grant=pat", "result=success"}, 1},
		{"dxtra_proxy_ready", nil, 1},
		{"dxtra_proxy_inflight_requests", nil, 0},
		{"dxtra_proxy_websocket_connections", nil, 0},
		{"dxtra_proxy_build_info", []string{"version=dev", "commit=unknown"}, 1},
	} {
		if got := value(m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v; want %v", c.name, c.labels, got, c.want)
		}
	}
	if value(m, "go_goroutines") < 0 || value(m, "process_resident_memory_bytes") < 0 {
		t.Errorf("Go and process collectors missing")
	}
	expiry := value(m, "dxtra_proxy_token_expiry_timestamp_seconds")
	if expiry < float64(time.Now().Unix()) {
		t.Fatalf("token expiry gauge = %v; want a time in the future", expiry)
	}

	// The API rejects the current token once: one retry counted.
	reqs := fake.Requests()
	fake.RevokeAccessToken(strings.TrimPrefix(reqs[len(reqs)-1].Header.Get("Authorization"), "Bearer "))
	if status, body := do(t, http.DefaultClient, "POST", "http://"+p.Listen+"/v1/graphql", graphqlQuery, nil); status != 200 {
		t.Fatalf("after revocation: %d %s", status, body)
	}
	m = scrape(t, p.Admin)
	if got := value(m, "dxtra_proxy_upstream_retries_total", "reason=invalid_jwt"); got != 1 {
		t.Errorf(`upstream_retries_total{reason="invalid_jwt"} = %v; want 1`, got)
	}

	// A background renewal moves the expiry gauge forward.
	eventually(t, 10*time.Second, "the expiry gauge to move forward", func() bool {
		m = scrape(t, p.Admin)
		return value(m, "dxtra_proxy_token_expiry_timestamp_seconds") > expiry
	})
	if got := value(m, "dxtra_proxy_token_renewals_total", "grant=refresh_token", "result=success"); got < 1 {
		t.Errorf(`token_renewals_total{grant="refresh_token",result="success"} = %v; want ≥ 1`, got)
	}
}
