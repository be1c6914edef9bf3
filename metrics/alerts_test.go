package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// alertsFile is the example rule file shipped for operators (and shown in README).
const alertsFile = "../deploy/prometheus/alerts.yaml"

// ruleFile mirrors Prometheus's rule-file format (rulefmt.RuleGroups); decoding with
// KnownFields rejects any key Prometheus would not know.
type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name        string            `yaml:"name"`
	Interval    string            `yaml:"interval"`
	QueryOffset string            `yaml:"query_offset"`
	Limit       int               `yaml:"limit"`
	Labels      map[string]string `yaml:"labels"`
	Rules       []rule            `yaml:"rules"`
}

type rule struct {
	Record        string            `yaml:"record"`
	Alert         string            `yaml:"alert"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

func loadRuleFile(t *testing.T, path string) ruleFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f ruleFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s is not a Prometheus rule file: %v", path, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("%s holds more than one YAML document (err %v)", path, err)
	}
	return f
}

// exposed gathers a registry whose every metric was exercised once and returns the
// sample names a PromQL expression can use (histograms as _bucket, _sum, _count), with
// the label values seen for each.
func exposed(t *testing.T) map[string]map[string][]string {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := New(reg, BuildInfo{Version: "v0.0.0", Commit: "test"})
	exerciseAll(m)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	names := map[string]map[string][]string{}
	for _, mf := range fams {
		labels := map[string][]string{}
		for _, metric := range mf.GetMetric() {
			for _, lp := range metric.GetLabel() {
				if !slices.Contains(labels[lp.GetName()], lp.GetValue()) {
					labels[lp.GetName()] = append(labels[lp.GetName()], lp.GetValue())
				}
			}
		}
		names[mf.GetName()] = labels
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			names[mf.GetName()+"_sum"] = labels
			names[mf.GetName()+"_count"] = labels
			withLE := map[string][]string{"le": nil}
			for k, v := range labels {
				withLE[k] = v
			}
			names[mf.GetName()+"_bucket"] = withLE
		}
	}
	return names
}

var (
	metricRef   = regexp.MustCompile(`dxtra_proxy_[a-z_]+`)
	selectorRef = regexp.MustCompile(`(dxtra_proxy_[a-z_]+)\s*\{([^}]*)\}`)
	matcherRef  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	groupingRef = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
)

// targetLabels are added by Prometheus at scrape time; expressions may group by them.
var targetLabels = []string{"instance", "job"}

// templateCheck parses a label or annotation template the way Prometheus expands it
// (text/template with $labels and $value defined), with its template functions
// stubbed, so that a typo in a template is caught here rather than at alert time.
func templateCheck(text string) error {
	stub := func(...any) (string, error) { return "", nil }
	funcs := template.FuncMap{}
	for _, name := range []string{
		"humanize", "humanize1024", "humanizeDuration", "humanizePercentage",
		"humanizeTimestamp", "toTime", "toDuration", "title", "toUpper", "toLower",
		"match", "reReplaceAll", "label", "value", "first", "strvalue", "args",
		"safeHtml", "externalURL", "pathPrefix", "tableLink", "graphLink",
		"query", "sortByLabel", "stripPort", "stripDomain", "parseDuration",
	} {
		funcs[name] = stub
	}
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}"
	_, err := template.New("t").Option("missingkey=zero").Funcs(funcs).Parse(defs + text)
	return err
}

func TestAlertRulesFile(t *testing.T) {
	f := loadRuleFile(t, alertsFile)
	names := exposed(t)

	if len(f.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	groups := map[string]bool{}
	alerts := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name == "" {
			t.Error("a group has no name")
		}
		if groups[g.Name] {
			t.Errorf("group name %q used twice", g.Name)
		}
		groups[g.Name] = true
		for _, d := range []string{g.Interval, g.QueryOffset} {
			if d != "" {
				if _, err := model.ParseDuration(d); err != nil {
					t.Errorf("group %q: %v", g.Name, err)
				}
			}
		}
		if len(g.Rules) == 0 {
			t.Errorf("group %q has no rules", g.Name)
		}
		for i, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = fmt.Sprintf("%s rule %d", g.Name, i)
			}
			t.Run(name, func(t *testing.T) {
				checkRule(t, r, names)
			})
			if r.Alert != "" {
				if alerts[r.Alert] {
					t.Errorf("alert %q defined twice", r.Alert)
				}
				alerts[r.Alert] = true
			}
		}
	}
	for _, want := range []string{"DxtraProxyTokenExpiringSoon", "DxtraProxyTokenRenewalsFailing"} {
		if !alerts[want] {
			t.Errorf("alert %s missing from %s", want, alertsFile)
		}
	}
}

func checkRule(t *testing.T, r rule, names map[string]map[string][]string) {
	if (r.Alert == "") == (r.Record == "") {
		t.Fatalf("rule must have exactly one of alert and record; alert=%q record=%q", r.Alert, r.Record)
	}
	if r.Alert != "" && !model.LegacyValidation.IsValidMetricName(r.Alert) {
		t.Errorf("alert name %q is not a valid metric name", r.Alert)
	}
	expr := strings.TrimSpace(r.Expr)
	if expr == "" {
		t.Fatal("expr is empty")
	}
	if d := strings.Count(expr, "(") - strings.Count(expr, ")"); d != 0 {
		t.Errorf("expr has unbalanced parentheses (%+d): %s", d, expr)
	}
	if d := strings.Count(expr, "{") - strings.Count(expr, "}"); d != 0 {
		t.Errorf("expr has unbalanced braces (%+d): %s", d, expr)
	}

	refs := metricRef.FindAllString(expr, -1)
	if len(refs) == 0 {
		t.Errorf("expr uses no dxtra_proxy_ metric: %s", expr)
	}
	usable := slices.Clone(targetLabels)
	for _, ref := range refs {
		labels, ok := names[ref]
		if !ok {
			t.Errorf("expr uses %s, which dxtra-proxy does not expose", ref)
			continue
		}
		for l := range labels {
			usable = append(usable, l)
		}
	}
	for _, sel := range selectorRef.FindAllStringSubmatch(expr, -1) {
		labels, ok := names[sel[1]]
		if !ok {
			continue // reported above
		}
		for _, mt := range matcherRef.FindAllStringSubmatch(sel[2], -1) {
			label, op, val := mt[1], mt[2], mt[3]
			values, ok := labels[label]
			if !ok {
				t.Errorf("expr matches %s on label %q, which it does not have", sel[1], label)
				continue
			}
			if op == "=" && values != nil && !slices.Contains(values, val) {
				t.Errorf("expr matches %s{%s=%q}; its values are %q", sel[1], label, val, values)
			}
		}
	}
	for _, g := range groupingRef.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !slices.Contains(usable, l) {
				t.Errorf("expr groups by %q, a label none of its metrics has", l)
			}
		}
	}

	for field, d := range map[string]string{"for": r.For, "keep_firing_for": r.KeepFiringFor} {
		if d == "" {
			continue
		}
		if _, err := model.ParseDuration(d); err != nil {
			t.Errorf("%s: %v", field, err)
		}
	}
	if r.Record != "" {
		return
	}
	switch sev := r.Labels["severity"]; sev {
	case "critical", "warning", "info":
	default:
		t.Errorf("labels.severity = %q; want critical, warning or info", sev)
	}
	for _, key := range []string{"summary", "description"} {
		if strings.TrimSpace(r.Annotations[key]) == "" {
			t.Errorf("annotations.%s is missing", key)
		}
	}
	for k, v := range r.Annotations {
		if err := templateCheck(v); err != nil {
			t.Errorf("annotations.%s template: %v", k, err)
		}
	}
	for k, v := range r.Labels {
		if !model.LegacyValidation.IsValidLabelName(k) {
			t.Errorf("label name %q is invalid", k)
		}
		if err := templateCheck(v); err != nil {
			t.Errorf("labels.%s template: %v", k, err)
		}
	}
}
