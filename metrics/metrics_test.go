package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// scrapeResult is one scrape of Handler(): every sample keyed as it is written in the
// text format, `name{label="value",...}` with labels in name order (histograms as
// name_bucket / name_sum / name_count), plus each family's type.
type scrapeResult struct {
	body    string
	samples map[string]float64
	types   map[string]dto.MetricType
	labels  map[string][]string // family → label names of its first series
}

// scrape GETs m.Handler() over a loopback server and parses the text exposition.
func scrape(t *testing.T, m *Metrics) scrapeResult {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics status = %d; want 200; body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics Content-Type = %q; want text/plain", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	res := scrapeResult{
		body:    string(body),
		samples: map[string]float64{},
		types:   map[string]dto.MetricType{},
		labels:  map[string][]string{},
	}
	for name, mf := range fams {
		res.types[name] = mf.GetType()
		for i, metric := range mf.GetMetric() {
			var pairs []string
			var names []string
			for _, lp := range metric.GetLabel() {
				pairs = append(pairs, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
				names = append(names, lp.GetName())
			}
			if i == 0 {
				res.labels[name] = names
			}
			key := func(suffix string, extra ...string) string {
				all := slices.Concat(pairs, extra)
				slices.Sort(all)
				if len(all) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(all, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				res.samples[key("")] = metric.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				res.samples[key("")] = metric.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				res.samples[key("")] = metric.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := metric.GetHistogram()
				res.samples[key("_count")] = float64(h.GetSampleCount())
				res.samples[key("_sum")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					le := fmt.Sprintf("le=%q", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))
					res.samples[key("_bucket", le)] = float64(b.GetCumulativeCount())
				}
			case dto.MetricType_SUMMARY:
				res.samples[key("_count")] = float64(metric.GetSummary().GetSampleCount())
				res.samples[key("_sum")] = metric.GetSummary().GetSampleSum()
			}
		}
	}
	return res
}

// value returns the sample named key and fails the test when it is absent.
func (s scrapeResult) value(t *testing.T, key string) float64 {
	t.Helper()
	v, ok := s.samples[key]
	if !ok {
		t.Fatalf("sample %s not in /metrics; have:\n%s", key, s.series(strings.SplitN(key, "{", 2)[0]))
		return 0
	}
	return v
}

// series lists the sample keys of one name (a family, or a histogram's _count etc.).
func (s scrapeResult) series(name string) []string {
	var out []string
	for k := range s.samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// exerciseAll touches every metric New registers, so that vectors have children.
func exerciseAll(m *Metrics) {
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	m.ObserveRenewal(GrantPAT, true)
	m.ObserveRetry(ReasonInvalidJWT)
	m.SetTokenExpiry(time.Unix(1700000000, 0))
	m.SetReady(true)
	m.AddWebSocket(1)
}

func TestNewRegistersSpecMetrics(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{Version: "v1.2.3", Commit: "abc1234", GoVersion: "go1.26.0"})
	exerciseAll(m)
	s := scrape(t, m)

	// SPEC "Metrics": name, type, labels (in name order).
	tests := []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"dxtra_proxy_requests_total", dto.MetricType_COUNTER, []string{"code", "method"}},
		{"dxtra_proxy_request_duration_seconds", dto.MetricType_HISTOGRAM, []string{"code"}},
		{"dxtra_proxy_inflight_requests", dto.MetricType_GAUGE, nil},
		{"dxtra_proxy_upstream_retries_total", dto.MetricType_COUNTER, []string{"reason"}},
		{"dxtra_proxy_token_renewals_total", dto.MetricType_COUNTER, []string{"grant", "result"}},
		{"dxtra_proxy_token_expiry_timestamp_seconds", dto.MetricType_GAUGE, nil},
		{"dxtra_proxy_ready", dto.MetricType_GAUGE, nil},
		{"dxtra_proxy_websocket_connections", dto.MetricType_GAUGE, nil},
		{"dxtra_proxy_build_info", dto.MetricType_GAUGE, []string{"commit", "goversion", "version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, ok := s.types[tt.name]
			if !ok {
				t.Fatalf("%s not in /metrics", tt.name)
			}
			if typ != tt.typ {
				t.Errorf("%s type = %v; want %v", tt.name, typ, tt.typ)
			}
			if diff := cmp.Diff(tt.labels, s.labels[tt.name]); diff != "" {
				t.Errorf("%s labels mismatch (-want +got):\n%s", tt.name, diff)
			}
		})
	}

	var dxtra []string
	for name := range s.types {
		if strings.HasPrefix(name, "dxtra_proxy_") {
			dxtra = append(dxtra, name)
		}
	}
	if len(dxtra) != len(tests) {
		t.Errorf("dxtra_proxy_ families = %v; want exactly the %d of SPEC", dxtra, len(tests))
	}

	// The standard Go and process collectors.
	want := []string{"go_goroutines", "go_memstats_alloc_bytes"}
	if runtime.GOOS == "linux" {
		want = append(want, "process_cpu_seconds_total", "process_resident_memory_bytes")
	}
	for _, name := range want {
		if _, ok := s.types[name]; !ok {
			t.Errorf("%s not in /metrics (Go/process collectors)", name)
		}
	}
}

func TestNewNilRegistry(t *testing.T) {
	m := New(nil, BuildInfo{})
	m.SetReady(true)
	if got := scrape(t, m).value(t, "dxtra_proxy_ready"); got != 1 {
		t.Errorf("dxtra_proxy_ready = %v; want 1", got)
	}
}

func TestNewPreinitialisesKnownSeries(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	s := scrape(t, m)
	want := []string{
		`dxtra_proxy_token_renewals_total{grant="pat",result="failure"}`,
		`dxtra_proxy_token_renewals_total{grant="pat",result="success"}`,
		`dxtra_proxy_token_renewals_total{grant="refresh_token",result="failure"}`,
		`dxtra_proxy_token_renewals_total{grant="refresh_token",result="success"}`,
	}
	if diff := cmp.Diff(want, s.series("dxtra_proxy_token_renewals_total")); diff != "" {
		t.Errorf("renewal series before any renewal (-want +got):\n%s", diff)
	}
	want = []string{
		`dxtra_proxy_upstream_retries_total{reason="invalid_jwt"}`,
		`dxtra_proxy_upstream_retries_total{reason="unauthorized"}`,
	}
	if diff := cmp.Diff(want, s.series("dxtra_proxy_upstream_retries_total")); diff != "" {
		t.Errorf("retry series before any retry (-want +got):\n%s", diff)
	}
	for _, k := range []string{
		`dxtra_proxy_token_renewals_total{grant="pat",result="failure"}`,
		`dxtra_proxy_upstream_retries_total{reason="unauthorized"}`,
		"dxtra_proxy_ready",
		"dxtra_proxy_token_expiry_timestamp_seconds",
		"dxtra_proxy_inflight_requests",
		"dxtra_proxy_websocket_connections",
	} {
		if got := s.value(t, k); got != 0 {
			t.Errorf("%s = %v before any event; want 0", k, got)
		}
	}
	// No request yet: no request series (they appear with the first request).
	if got := s.series("dxtra_proxy_requests_total"); len(got) != 0 {
		t.Errorf("request series before any request = %v; want none", got)
	}
}

func TestNewTwiceOnOneRegistryPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, BuildInfo{})
	defer func() {
		if recover() == nil {
			t.Error("second New on the same registry did not panic")
		}
	}()
	New(reg, BuildInfo{})
}

func TestBuildInfo(t *testing.T) {
	tests := []struct {
		name string
		info BuildInfo
		want string
	}{
		{
			name: "given",
			info: BuildInfo{Version: "v1.2.3", Commit: "abc1234", GoVersion: "go1.26.0"},
			want: `dxtra_proxy_build_info{commit="abc1234",goversion="go1.26.0",version="v1.2.3"}`,
		},
		{
			name: "empty",
			info: BuildInfo{},
			want: `dxtra_proxy_build_info{commit="unknown",goversion="` + runtime.Version() + `",version="unknown"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := scrape(t, New(prometheus.NewRegistry(), tt.info))
			if got := s.value(t, tt.want); got != 1 {
				t.Errorf("%s = %v; want 1", tt.want, got)
			}
			if got := s.series("dxtra_proxy_build_info"); len(got) != 1 {
				t.Errorf("build_info series = %v; want exactly one", got)
			}
		})
	}
}

func TestObserveRetry(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	m.ObserveRetry("invalid_jwt")
	s := scrape(t, m)
	if got := s.value(t, `dxtra_proxy_upstream_retries_total{reason="invalid_jwt"}`); got != 1 {
		t.Errorf(`retries{reason="invalid_jwt"} after one retry = %v; want 1`, got)
	}
	if got := s.value(t, `dxtra_proxy_upstream_retries_total{reason="unauthorized"}`); got != 0 {
		t.Errorf(`retries{reason="unauthorized"} = %v; want 0`, got)
	}

	m.ObserveRetry("unauthorized")
	m.ObserveRetry("unauthorized")
	m.ObserveRetry("bogus")       // unknown reasons are dropped:
	m.ObserveRetry("Invalid_JWT") // no new series,
	m.ObserveRetry("")            // no count elsewhere.
	s = scrape(t, m)
	if got := s.value(t, `dxtra_proxy_upstream_retries_total{reason="unauthorized"}`); got != 2 {
		t.Errorf(`retries{reason="unauthorized"} after two retries = %v; want 2`, got)
	}
	if got := s.value(t, `dxtra_proxy_upstream_retries_total{reason="invalid_jwt"}`); got != 1 {
		t.Errorf(`retries{reason="invalid_jwt"} = %v; want 1`, got)
	}
	if got := s.series("dxtra_proxy_upstream_retries_total"); len(got) != 2 {
		t.Errorf("retry series = %v; want the two known reasons only", got)
	}
}

func TestObserveRenewal(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	calls := []struct {
		grant string
		ok    bool
	}{
		{"pat", true},
		{"refresh_token", true}, {"refresh_token", true}, {"refresh_token", true},
		{"refresh_token", false}, {"refresh_token", false},
		{"password", true}, {"", false}, {"PAT", true}, // unknown grants are dropped
	}
	for _, c := range calls {
		m.ObserveRenewal(c.grant, c.ok)
	}
	s := scrape(t, m)
	tests := []struct {
		name string
		key  string
		want float64
	}{
		{"pat success", `dxtra_proxy_token_renewals_total{grant="pat",result="success"}`, 1},
		{"pat failure", `dxtra_proxy_token_renewals_total{grant="pat",result="failure"}`, 0},
		{"refresh success", `dxtra_proxy_token_renewals_total{grant="refresh_token",result="success"}`, 3},
		{"refresh failure", `dxtra_proxy_token_renewals_total{grant="refresh_token",result="failure"}`, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.value(t, tt.key); got != tt.want {
				t.Errorf("%s = %v; want %v", tt.key, got, tt.want)
			}
		})
	}
	if got := s.series("dxtra_proxy_token_renewals_total"); len(got) != 4 {
		t.Errorf("renewal series = %v; want the four known combinations only", got)
	}
}

func TestSetTokenExpiry(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	const key = "dxtra_proxy_token_expiry_timestamp_seconds"

	first := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	m.SetTokenExpiry(first)
	got := scrape(t, m).value(t, key)
	if want := float64(first.Unix()) + 0.5; math.Abs(got-want) > 1e-3 {
		t.Errorf("%s = %v; want %v", key, got, want)
	}

	renewed := first.Add(15 * time.Minute)
	m.SetTokenExpiry(renewed)
	after := scrape(t, m).value(t, key)
	if after-got < 899.999 || after-got > 900.001 {
		t.Errorf("%s moved by %v s after a renewal; want 900", key, after-got)
	}

	m.SetTokenExpiry(time.Time{})
	if got := scrape(t, m).value(t, key); got != 0 {
		t.Errorf("%s after SetTokenExpiry(zero) = %v; want 0", key, got)
	}
}

func TestSetReady(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	for _, ready := range []bool{true, false, true} {
		m.SetReady(ready)
		want := 0.0
		if ready {
			want = 1
		}
		if got := scrape(t, m).value(t, "dxtra_proxy_ready"); got != want {
			t.Errorf("dxtra_proxy_ready after SetReady(%v) = %v; want %v", ready, got, want)
		}
	}
}

func TestAddWebSocket(t *testing.T) {
	m := New(prometheus.NewRegistry(), BuildInfo{})
	steps := []struct {
		delta int
		want  float64
	}{{1, 1}, {1, 2}, {-1, 1}, {1, 2}, {-1, 1}, {-1, 0}}
	for _, st := range steps {
		m.AddWebSocket(st.delta)
		if got := scrape(t, m).value(t, "dxtra_proxy_websocket_connections"); got != st.want {
			t.Errorf("websocket_connections after AddWebSocket(%d) = %v; want %v", st.delta, got, st.want)
		}
	}
}
