package main

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPackageImports keeps DESIGN.md's layout: tokencache, proxy and metrics
// never import each other (cmd wires them), and each library package uses only
// the dependencies it is allowed. Test files are exempt.
func TestPackageImports(t *testing.T) {
	const mod = "github.com/dxtra-ai/dxtra-proxy/"
	allowed := map[string][]string{
		"tokencache": {"go.uber.org/zap", "golang.org/x/sync/", "github.com/golang-jwt/jwt/v5"},
		"proxy":      {"go.uber.org/zap", "github.com/coder/websocket"},
		"metrics":    {"github.com/prometheus/client_golang/"},
		"dxtratest":  {"github.com/golang-jwt/jwt/v5", "github.com/coder/websocket"},
	}
	for pkg, allow := range allowed {
		t.Run(pkg, func(t *testing.T) {
			files, err := filepath.Glob(filepath.Join("..", "..", pkg, "*.go"))
			if err != nil {
				t.Fatal(err)
			}
			checked := 0
			for _, name := range files {
				if strings.HasSuffix(name, "_test.go") {
					continue
				}
				f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
				if err != nil {
					t.Fatal(err)
				}
				checked++
				for _, imp := range f.Imports {
					path, _ := strconv.Unquote(imp.Path.Value)
					if !strings.Contains(strings.Split(path, "/")[0], ".") {
						continue // standard library
					}
					ok := false
					for _, a := range allow {
						if path == strings.TrimSuffix(a, "/") || strings.HasPrefix(path, a) || strings.HasPrefix(path, a+"/") {
							ok = true
						}
					}
					if strings.HasPrefix(path, mod) {
						ok = false // no package of ours imports a sibling
					}
					if !ok {
						t.Errorf("%s imports %s; %s may import only the standard library and %v", name, path, pkg, allow)
					}
				}
			}
			if checked == 0 {
				t.Fatalf("no non-test files in %s", pkg)
			}
		})
	}
}
