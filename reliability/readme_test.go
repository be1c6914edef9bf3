package reliability

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadmeListsEveryScenario keeps README's Reliability table in step with the
// suite: every scenario (a Test function here) has a row with its command, and every
// command names a scenario that exists.
func TestReadmeListsEveryScenario(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i, j := strings.Index(doc, "<!-- BEGIN reliability -->"), strings.Index(doc, "<!-- END reliability -->")
	if i < 0 || j < i {
		t.Fatal("README.md has no <!-- BEGIN reliability --> ... <!-- END reliability --> section")
	}
	var listed []string
	for _, m := range regexp.MustCompile("`go test -race ./reliability -run (Test\\w+)`").FindAllStringSubmatch(doc[i:j], -1) {
		listed = append(listed, m[1])
	}

	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var scenarios []string
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil {
				continue
			}
			if name := fd.Name.Name; strings.HasPrefix(name, "Test") && name != "TestMain" && name != "TestReadmeListsEveryScenario" {
				scenarios = append(scenarios, name)
			}
		}
	}
	slices.Sort(listed)
	slices.Sort(scenarios)
	if !slices.Equal(listed, scenarios) {
		t.Errorf("README's Reliability table lists %v;\nthe suite has %v", listed, scenarios)
	}
}
