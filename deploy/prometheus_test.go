package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
)

// alertsFile is the Prometheus rule file shipped for operators (README shows it; the
// metrics package checks every metric and label it names against the registry).
const alertsFile = "deploy/prometheus/alerts.yaml"

// evalInterval is Prometheus's default rule evaluation interval.
const evalInterval = 15 * time.Second

// alertSeries is the synthetic scrape history the rules are evaluated over, in
// promqltest's load notation: one sample every 15 s for 20 minutes, one instance per
// situation. Times below are seconds since the start of the history.
const alertSeries = `
load 15s
  dxtra_proxy_token_expiry_timestamp_seconds{instance="healthy"}  100000+0x80
  dxtra_proxy_token_expiry_timestamp_seconds{instance="stuck"}    400+0x80
  dxtra_proxy_token_expiry_timestamp_seconds{instance="starting"} 0+0x80
  dxtra_proxy_token_renewals_total{instance="failing",grant="refresh_token",result="failure"} 0+0.25x80
  dxtra_proxy_token_renewals_total{instance="failing",grant="pat",result="failure"}           0+0.25x80
  dxtra_proxy_token_renewals_total{instance="failing",grant="refresh_token",result="success"} 0+0x80
  dxtra_proxy_token_renewals_total{instance="blip",grant="refresh_token",result="failure"}    0 1 2 3+0x77
  dxtra_proxy_token_renewals_total{instance="blip",grant="refresh_token",result="success"}    0+1x80
  dxtra_proxy_ready{instance="healthy"}  1+0x80
  dxtra_proxy_ready{instance="stuck"}    0+0x80
`

// TestAlertRules loads deploy/prometheus/alerts.yaml the way Prometheus does (rulefmt:
// strict YAML, PromQL, annotation templates) and evaluates every alerting rule every
// 15 s over alertSeries with Prometheus's own engine and rule code, as promtool's rule
// unit tests do: each alert must be pending, firing or silent exactly when its
// situation says, for the right instance, with its annotations rendered.
func TestAlertRules(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(repoPath(alertsFile), false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("rulefmt: %v", err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}

	storage := promqltest.LoadedStorage(t, alertSeries)
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	query := rules.EngineQueryFunc(engine, storage)

	// state[alert][t] is what each alert looked like after the evaluation at t seconds.
	type alertState struct {
		state       rules.AlertState
		value       float64
		annotations map[string]string
	}
	state := map[string]map[int]map[string]alertState{}

	start := time.Unix(0, 0).UTC()
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			rule := rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
				labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", false, nil)
			state[r.Alert] = map[int]map[string]alertState{}
			for ts := start; !ts.After(start.Add(19 * time.Minute)); ts = ts.Add(evalInterval) {
				if _, err := rule.Eval(context.Background(), 0, ts, query, nil, 0); err != nil {
					t.Fatalf("%s at %v: %v", r.Alert, ts.Sub(start), err)
				}
				now := map[string]alertState{}
				for _, a := range rule.ActiveAlerts() {
					if a.Labels.Get("severity") == "" {
						t.Errorf("%s: alert %v has no severity label", r.Alert, a.Labels)
					}
					inst := a.Labels.Get("instance")
					if _, dup := now[inst]; dup {
						t.Errorf("%s at %v: more than one alert for instance %q (%v); want one per proxy", r.Alert, ts.Sub(start), inst, a.Labels)
					}
					now[inst] = alertState{a.State, a.Value, a.Annotations.Map()}
				}
				state[r.Alert][int(ts.Sub(start)/time.Second)] = now
			}
		}
	}

	for _, name := range []string{"DxtraProxyTokenExpiringSoon", "DxtraProxyTokenRenewalsFailing", "DxtraProxyNotReady"} {
		if state[name] == nil {
			t.Errorf("%s is not in %s", name, alertsFile)
		}
	}

	firing, pending := rules.StateFiring, rules.StatePending
	checks := []struct {
		alert string
		at    int // seconds since the start of the history
		want  map[string]rules.AlertState
	}{
		// The stuck token expires at 400 s; with 90 s to go (310 s) the alert becomes
		// pending, fires 30 s later and keeps firing once the token has expired. A
		// healthy token and a proxy that has no token yet (expiry 0) never alert.
		{"DxtraProxyTokenExpiringSoon", 300, map[string]rules.AlertState{}},
		{"DxtraProxyTokenExpiringSoon", 315, map[string]rules.AlertState{"stuck": pending}},
		{"DxtraProxyTokenExpiringSoon", 345, map[string]rules.AlertState{"stuck": firing}},
		{"DxtraProxyTokenExpiringSoon", 900, map[string]rules.AlertState{"stuck": firing}},
		// One failure a minute per grant, summed across grants into one alert per
		// instance: pending once the 10-minute window holds more than 3 (after about
		// 100 s), firing 2 minutes later. Three failures once, then successes: never.
		{"DxtraProxyTokenRenewalsFailing", 60, map[string]rules.AlertState{}},
		{"DxtraProxyTokenRenewalsFailing", 150, map[string]rules.AlertState{"failing": pending}},
		{"DxtraProxyTokenRenewalsFailing", 300, map[string]rules.AlertState{"failing": firing}},
		{"DxtraProxyTokenRenewalsFailing", 1140, map[string]rules.AlertState{"failing": firing}},
		// Not ready from the start: pending until it has lasted 5 minutes, then firing.
		{"DxtraProxyNotReady", 285, map[string]rules.AlertState{"stuck": pending}},
		{"DxtraProxyNotReady", 300, map[string]rules.AlertState{"stuck": firing}},
	}
	for _, c := range checks {
		got := map[string]rules.AlertState{}
		for inst, s := range state[c.alert][c.at] {
			got[inst] = s.state
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s at %d s: alerts by instance = %v; want %v", c.alert, c.at, got, c.want)
		}
	}

	// Annotations render with the alert's value: the time left, then the time since
	// expiry as a negative duration; the failure count.
	for _, c := range []struct {
		alert, instance string
		at              int
		summary         string
	}{
		{"DxtraProxyTokenExpiringSoon", "stuck", 345, "dxtra-proxy stuck: access token not renewed, 55s left (negative: expired)"},
		{"DxtraProxyTokenExpiringSoon", "stuck", 900, "dxtra-proxy stuck: access token not renewed, -8m 20s left (negative: expired)"},
		{"DxtraProxyNotReady", "stuck", 300, "dxtra-proxy stuck has not been ready for 5 minutes"},
	} {
		s := state[c.alert][c.at][c.instance]
		if got := s.annotations["summary"]; got != c.summary {
			t.Errorf("%s at %d s: summary = %q; want %q", c.alert, c.at, got, c.summary)
		}
		if strings.Contains(s.annotations["description"], "{{") {
			t.Errorf("%s: description left a template unexpanded: %q", c.alert, s.annotations["description"])
		}
	}
	if s := state["DxtraProxyTokenRenewalsFailing"][300]["failing"]; s.value <= 3 || !strings.Contains(s.annotations["summary"], "token renewals failed in the last 10 minutes") {
		t.Errorf("DxtraProxyTokenRenewalsFailing at 300 s: value %v, summary %q; want > 3 failures counted", s.value, s.annotations["summary"])
	}
}
