package tokencache

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package's non-test imports to what DESIGN.md allows:
// the standard library, zap, golang.org/x/sync and a JWT library — never proxy or
// metrics.
func TestImports(t *testing.T) {
	allowed := []string{"go.uber.org/zap", "golang.org/x/sync/", "github.com/golang-jwt/jwt/v5"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			ok := false
			for _, a := range allowed {
				ok = ok || path == strings.TrimSuffix(a, "/") || strings.HasPrefix(path, a)
			}
			if !ok {
				t.Errorf("%s imports %q; want only stdlib, zap, x/sync, jwt", name, path)
			}
		}
	}
}
