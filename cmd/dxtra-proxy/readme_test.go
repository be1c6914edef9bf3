package main

import (
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite README.md's generated sections")

const readmePath = "../../README.md"

// configTable renders README's configuration table from the envconfig tags,
// so the README cannot drift from the code.
func configTable() string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n| --- | --- | --- |\n")
	typ := reflect.TypeFor[config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("envconfig")
		if name == "" {
			continue
		}
		def := f.Tag.Get("default")
		if def == "" {
			def = "—"
		} else {
			def = "`" + def + "`"
		}
		b.WriteString("| `DXTRA_" + name + "` | " + def + " | " + f.Tag.Get("desc") + " |\n")
	}
	return b.String()
}

// replaceSection swaps the text between <!-- BEGIN name --> and <!-- END name -->.
func replaceSection(doc, name, body string) (string, bool) {
	begin, end := "<!-- BEGIN "+name+" -->\n", "<!-- END "+name+" -->"
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		return doc, false
	}
	return doc[:i+len(begin)] + body + doc[j:], true
}

// checkSection fails unless README's generated section name holds exactly
// body; with -update-readme it rewrites the section instead.
func checkSection(t *testing.T, name, body, what string) {
	t.Helper()
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	want, ok := replaceSection(doc, name, body)
	switch {
	case !ok:
		t.Fatalf("README.md has no <!-- BEGIN %s --> ... <!-- END %[1]s --> section", name)
	case want == doc:
	case *updateReadme:
		if err := os.WriteFile(readmePath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	default:
		t.Errorf("README.md's %s; run\n\tgo test ./cmd/dxtra-proxy -run TestReadme -update-readme\nwant:\n%s", what, body)
	}
}

func TestReadmeConfigTableMatchesSpec(t *testing.T) {
	checkSection(t, "config", configTable(), "configuration table differs from the envconfig spec")
}

// TestReadmeStartsWithTheTwoCommands keeps README's promise to newcomers: the
// first two commands run the demo and the tests, and .ci/run runs the same
// test command.
func TestReadmeStartsWithTheTwoCommands(t *testing.T) {
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "go ") {
			cmds = append(cmds, l)
		}
		if len(cmds) == 2 {
			break
		}
	}
	want := []string{"go run ./cmd/dxtra-proxy demo", "go test -race -shuffle=on ./... && (cd deploy && go test -race -shuffle=on ./...)"}
	if len(cmds) != 2 || cmds[0] != want[0] || cmds[1] != want[1] {
		t.Fatalf("README's first commands = %q; want %q", cmds, want)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "\n"+want[1]+"\n") {
		t.Errorf(".ci/run does not run README's test command %q", want[1])
	}
}

// TestReadmeAlertsMatchFile keeps README's alert rules the same as the file
// that metrics/alerts_test.go checks against the registered metrics.
func TestReadmeAlertsMatchFile(t *testing.T) {
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkSection(t, "alerts", "```yaml\n"+string(rules)+"```\n", "alert rules differ from deploy/prometheus/alerts.yaml")
}
