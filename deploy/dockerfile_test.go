package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

const (
	distrolessBase = "gcr.io/distroless/static-debian12"
	mainModule     = "github.com/dxtra-ai/dxtra-proxy"
)

// dockerStage is one FROM … section of the Dockerfile.
type dockerStage struct {
	name  string
	from  string // image reference, ARGs expanded
	nodes []*parser.Node
}

// dockerfile is the parsed Dockerfile.
type dockerfile struct {
	globalArgs map[string]string // ARGs before the first FROM, with defaults
	stages     []*dockerStage
}

func (d *dockerfile) final() *dockerStage { return d.stages[len(d.stages)-1] }

// args lists an instruction's arguments.
func args(n *parser.Node) []string {
	var out []string
	for x := n.Next; x != nil; x = x.Next {
		out = append(out, x.Value)
	}
	return out
}

// flag returns an instruction's --name=value flag.
func flag(n *parser.Node, name string) (string, bool) {
	for _, f := range n.Flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func parseDockerfileBytes(data []byte) (*dockerfile, error) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if len(res.Warnings) > 0 {
		return nil, fmt.Errorf("parser warnings: %+v", res.Warnings)
	}
	d := &dockerfile{globalArgs: map[string]string{}}
	lex := shell.NewLex(res.EscapeToken)
	for _, n := range res.AST.Children {
		cmd := strings.ToLower(n.Value)
		switch {
		case cmd == "from":
			a := args(n)
			if len(a) == 0 {
				return nil, fmt.Errorf("line %d: FROM without an image", n.StartLine)
			}
			from, _, err := lex.ProcessWord(a[0], mapEnv(d.globalArgs))
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n.StartLine, err)
			}
			s := &dockerStage{from: from}
			if len(a) == 3 && strings.EqualFold(a[1], "as") {
				s.name = a[2]
			}
			d.stages = append(d.stages, s)
		case len(d.stages) == 0:
			if cmd != "arg" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", n.StartLine, n.Value)
			}
			for _, a := range args(n) {
				k, v, _ := strings.Cut(a, "=")
				d.globalArgs[k] = v
			}
		default:
			s := d.stages[len(d.stages)-1]
			s.nodes = append(s.nodes, n)
		}
	}
	if len(d.stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return d, nil
}

func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	d, err := parseDockerfileBytes(readRepoFile(t, "Dockerfile"))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return d
}

// envMap is a shell.EnvGetter over a map.
type envMap map[string]string

func (e envMap) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e envMap) Keys() []string {
	return slices.Sorted(mapsKeys(e))
}

func mapEnv(m map[string]string) shell.EnvGetter { return envMap(m) }

// instructions returns a stage's instructions of one kind.
func (s *dockerStage) instructions(cmd string) []*parser.Node {
	var out []*parser.Node
	for _, n := range s.nodes {
		if strings.EqualFold(n.Value, cmd) {
			out = append(out, n)
		}
	}
	return out
}

// dockerEntrypoint is the binary the image runs.
func dockerEntrypoint(t *testing.T) string {
	t.Helper()
	eps := parseDockerfile(t).final().instructions("entrypoint")
	if len(eps) != 1 || !eps[0].Attributes["json"] || len(args(eps[0])) != 1 {
		t.Fatalf("Dockerfile: want one exec-form ENTRYPOINT [\"/binary\"] in the final stage")
	}
	return args(eps[0])[0]
}

func TestDockerfileFinalStage(t *testing.T) {
	f := program(t)
	d := parseDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s); want a builder and a distroless final stage", len(d.stages))
	}
	final := d.final()
	if repo, tag := imageRepo(final.from), strings.TrimPrefix(final.from, imageRepo(final.from)); repo != distrolessBase || !strings.HasPrefix(tag, ":nonroot") {
		t.Errorf("final stage FROM %s; want %s:nonroot", final.from, distrolessBase)
	}
	// Nothing runs in the final stage: distroless has no shell, and needs none.
	for _, n := range final.nodes {
		switch strings.ToLower(n.Value) {
		case "arg", "label", "copy", "user", "expose", "healthcheck", "entrypoint", "cmd", "env", "workdir", "stopsignal":
		default:
			t.Errorf("final stage line %d: %s; the run-time image has no shell", n.StartLine, n.Value)
		}
	}
	users := final.instructions("user")
	if want := fmt.Sprintf("%d:%d", nonRootUID, nonRootUID); len(users) == 0 || args(users[len(users)-1])[0] != want {
		t.Errorf("final stage USER is not %s (numeric, so runAsNonRoot admits it)", want)
	}

	bin := dockerEntrypoint(t)
	copied := false
	for _, c := range final.instructions("copy") {
		a := args(c)
		if from, ok := flag(c, "from"); ok && len(a) == 2 && a[1] == bin && slices.ContainsFunc(d.stages, func(s *dockerStage) bool { return s.name == from }) {
			copied = true
		}
	}
	if !copied {
		t.Errorf("final stage does not COPY --from=<builder> the binary to %s", bin)
	}

	hcs := final.instructions("healthcheck")
	if len(hcs) != 1 || !hcs[0].Attributes["json"] {
		t.Errorf("final stage: want one exec-form HEALTHCHECK CMD [%q, \"healthcheck\"]", bin)
	} else if got, want := args(hcs[0]), []string{"CMD", bin, "healthcheck"}; !slices.Equal(got, want) {
		t.Errorf("HEALTHCHECK %v; want %v", got, want)
	}

	var exposed []string
	for _, e := range final.instructions("expose") {
		exposed = append(exposed, args(e)...)
	}
	for _, name := range []string{"DXTRA_LISTEN_ADDR", "DXTRA_ADMIN_ADDR"} {
		a := parseListenAddr(t, name, f.defaultOf(t, name))
		if !slices.Contains(exposed, fmt.Sprint(a.port)) {
			t.Errorf("EXPOSE %v lacks %d, the port of %s's default", exposed, a.port, name)
		}
	}

	labels := map[string]string{}
	for _, l := range final.instructions("label") {
		a := args(l)
		for i := 0; i+1 < len(a); i += 3 {
			labels[a[i]] = strings.Trim(a[i+1], `"`)
		}
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.title":    "dxtra-proxy",
		"org.opencontainers.image.source":   "https://" + mainModule,
		"org.opencontainers.image.version":  "${VERSION}",
		"org.opencontainers.image.revision": "${COMMIT}",
	} {
		if labels[k] != want {
			t.Errorf("LABEL %s = %q; want %q", k, labels[k], want)
		}
	}
	for _, name := range []string{"VERSION", "COMMIT"} {
		if !stageDeclaresArg(final, name, len(final.nodes)) {
			t.Errorf("final stage uses ${%s} in labels without declaring ARG %s", name, name)
		}
	}
}

// stageDeclaresArg reports whether ARG name comes before instruction index i.
func stageDeclaresArg(s *dockerStage, name string, i int) bool {
	for _, n := range s.nodes[:i] {
		if strings.EqualFold(n.Value, "arg") {
			for _, a := range args(n) {
				if k, _, _ := strings.Cut(a, "="); k == name {
					return true
				}
			}
		}
	}
	return false
}

// makefile is the variables and rule recipes of a Makefile.
type makefile struct {
	vars    map[string]string
	recipes map[string][]string
}

var (
	makeVarRE  = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|::=|=)\s*(.*)$`)
	makeRuleRE = regexp.MustCompile(`^([A-Za-z0-9_./-]+)\s*:([^=]|$)`)
	makeRefRE  = regexp.MustCompile(`\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]`)
)

func parseMakefile(data []byte) *makefile {
	m := &makefile{vars: map[string]string{}, recipes: map[string][]string{}}
	rule := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "\t") {
			if rule != "" {
				m.recipes[rule] = append(m.recipes[rule], strings.TrimSpace(line))
			}
			continue
		}
		rule = ""
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if v := makeVarRE.FindStringSubmatch(line); v != nil {
			if _, set := m.vars[v[1]]; !set || v[2] != "?=" {
				m.vars[v[1]] = strings.TrimSpace(v[3])
			}
			continue
		}
		if r := makeRuleRE.FindStringSubmatch(line); r != nil {
			rule = r[1]
		}
	}
	return m
}

// expand replaces $(VAR) references as make would, with command-line
// overrides winning; it gives up on self-reference.
func (m *makefile) expand(s string, overrides map[string]string) (string, error) {
	for depth := 0; makeRefRE.MatchString(s); depth++ {
		if depth > 16 {
			return "", fmt.Errorf("make variables nest too deep (a cycle?) in %q", s)
		}
		s = makeRefRE.ReplaceAllStringFunc(s, func(ref string) string {
			name := makeRefRE.FindStringSubmatch(ref)[1]
			if v, ok := overrides[name]; ok {
				return v
			}
			return m.vars[name]
		})
	}
	return s, nil
}

// buildCommand is a go build command line: its environment assignments and its
// arguments with -o and its value removed.
type buildCommand struct {
	env  []string
	args []string
	out  string
}

// parseBuildCommand picks `go build` out of a shell command's words.
func parseBuildCommand(words []string) (buildCommand, error) {
	var bc buildCommand
	start := -1
	for i := 0; i+1 < len(words); i++ {
		if words[i] == "go" && words[i+1] == "build" {
			start = i
			break
		}
	}
	if start < 0 {
		return bc, fmt.Errorf("no go build in %q", words)
	}
	for i := start - 1; i >= 0 && strings.Contains(words[i], "=") && !strings.HasPrefix(words[i], "-"); i-- {
		bc.env = append(bc.env, words[i])
	}
	slices.Sort(bc.env)
	rest := words[start:]
	for i := 0; i < len(rest); i++ {
		switch w := rest[i]; {
		case w == "&&" || w == ";" || w == "||":
			i = len(rest)
		case w == "-o" && i+1 < len(rest):
			bc.out = rest[i+1]
			i++
		default:
			bc.args = append(bc.args, w)
		}
	}
	return bc, nil
}

// testVersion and testCommit stand for the stamped values on both sides.
const testVersion, testCommit = "v0.0.0-deploytest", "0123456789ab"

func TestDockerfileBuildMatchesMakefile(t *testing.T) {
	d := parseDockerfile(t)
	mk := parseMakefile(readRepoFile(t, "Makefile"))
	for _, v := range []string{"RELEASE_FLAGS", "LDFLAGS"} {
		if _, ok := mk.vars[v]; !ok {
			t.Fatalf("Makefile defines no %s", v)
		}
	}
	overrides := map[string]string{"VERSION": testVersion, "COMMIT": testCommit}

	// The Makefile's build recipe, as make runs it.
	var makeBuild *buildCommand
	for _, line := range mk.recipes["build"] {
		expanded, err := mk.expand(line, overrides)
		if err != nil {
			t.Fatal(err)
		}
		words, err := shell.NewLex('\\').ProcessWords(expanded, envMap{})
		if err != nil {
			t.Fatalf("Makefile build recipe %q: %v", line, err)
		}
		if bc, err := parseBuildCommand(words); err == nil {
			makeBuild = &bc
		}
	}
	if makeBuild == nil {
		t.Fatalf("Makefile's build target runs no go build")
	}
	for _, v := range []string{"RELEASE_FLAGS", "LDFLAGS"} {
		if !strings.Contains(strings.Join(mk.recipes["build"], "\n"), "$("+v+")") {
			t.Errorf("Makefile's build recipe does not use $(%s)", v)
		}
	}

	// The Dockerfile's, as the builder stage's shell runs it.
	var dockerBuild *buildCommand
	var builder *dockerStage
	for _, s := range d.stages[:len(d.stages)-1] {
		for i, n := range s.nodes {
			if !strings.EqualFold(n.Value, "run") || !strings.Contains(strings.Join(args(n), " "), "go build") {
				continue
			}
			for _, a := range []string{"VERSION", "COMMIT"} {
				if !stageDeclaresArg(s, a, i) {
					t.Errorf("builder stage: ARG %s is not declared before the go build, so it stamps nothing", a)
				}
			}
			env := envMap{"VERSION": testVersion, "COMMIT": testCommit, "TARGETOS": "linux", "TARGETARCH": "amd64"}
			words, err := shell.NewLex('\\').ProcessWords(strings.Join(args(n), " "), env)
			if err != nil {
				t.Fatalf("Dockerfile line %d: %v", n.StartLine, err)
			}
			bc, err := parseBuildCommand(words)
			if err != nil {
				t.Fatalf("Dockerfile line %d: %v", n.StartLine, err)
			}
			dockerBuild, builder = &bc, s
		}
	}
	if dockerBuild == nil {
		t.Fatalf("no go build in the Dockerfile's builder stage")
	}
	if !slices.Equal(dockerBuild.args, makeBuild.args) {
		t.Errorf("Dockerfile builds with\n\t%q\nMakefile builds with\n\t%q", dockerBuild.args, makeBuild.args)
	}
	for _, e := range makeBuild.env {
		if !slices.Contains(dockerBuild.env, e) {
			t.Errorf("Dockerfile's go build lacks %s (the Makefile sets it); has %v", e, dockerBuild.env)
		}
	}

	// The builder is the Go of go.mod, and modules come in their own layer.
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(readRepoFile(t, "go.mod"))
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := "golang:" + string(goVersion[1]); builder.from != want && !strings.HasPrefix(builder.from, want+".") && !strings.HasPrefix(builder.from, want+"-") {
		t.Errorf("builder FROM %s; go.mod says go %s, want %s", builder.from, goVersion[1], want)
	}
	checkModuleLayer(t, builder)

	// The final stage copies what was built.
	copied := false
	for _, c := range d.final().instructions("copy") {
		if a := args(c); len(a) == 2 && a[0] == dockerBuild.out {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the final stage does not copy the build output %s", dockerBuild.out)
	}
}

// checkModuleLayer: COPY go.mod go.sum, then go mod download, then the rest.
func checkModuleLayer(t *testing.T, s *dockerStage) {
	t.Helper()
	state := 0 // 0: want COPY go.mod go.sum; 1: want RUN go mod download; 2: done
	for _, n := range s.nodes {
		a := args(n)
		switch cmd := strings.ToLower(n.Value); {
		case state == 0 && cmd == "copy" && slices.Contains(a, "go.mod") && slices.Contains(a, "go.sum") && !slices.Contains(a, "."):
			state = 1
		case state == 1 && cmd == "run" && strings.Contains(strings.Join(a, " "), "go mod download"):
			state = 2
		case state < 2 && cmd == "copy":
			t.Errorf("builder line %d: COPY %v before the module download layer (COPY go.mod go.sum ./ then RUN go mod download)", n.StartLine, a)
			return
		}
	}
	if state != 2 {
		t.Errorf("builder stage has no module download layer (COPY go.mod go.sum ./ then RUN go mod download)")
	}
}

func TestDockerignore(t *testing.T) {
	program(t) // the package list below needs a buildable cmd/dxtra-proxy
	patterns, err := ignorefile.ReadAll(bytes.NewReader(readRepoFile(t, ".dockerignore")))
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	excluded := func(p string) bool {
		ex, err := pm.MatchesOrParentMatches(p)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	// Secrets and VCS data never reach the builder.
	for _, p := range []string{composeEnvFile, ".git/config", "deploy/compose/compose.yaml", "bin/dxtra-proxy"} {
		if !excluded(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
	// Everything the build needs does.
	need := []string{"go.mod", "go.sum"}
	list := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if eq .Module.Path "`+mainModule+`"}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`,
		"./cmd/dxtra-proxy")
	list.Dir = repoRoot
	list.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, abs := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(repoRoot, abs)
		if err != nil {
			t.Fatal(err)
		}
		need = append(need, filepath.ToSlash(rel))
	}
	if len(need) < 3 {
		t.Fatalf("go list found no source file of cmd/dxtra-proxy")
	}
	for _, p := range need {
		if excluded(p) {
			t.Errorf(".dockerignore keeps %s, which the image build needs, out of the context", p)
		}
	}
}

func TestParseMakefile(t *testing.T) {
	mk := parseMakefile([]byte("# c\nA ?= one\nA ?= two\nB := $(A) and ${A}\nC = $(C)x\n\nbuild:\n\tgo build $(B)\n\nother: build\n\techo\n"))
	if got, err := mk.expand("$(B)", nil); err != nil || got != "one and one" {
		t.Errorf("expand($(B)) = %q, %v; want \"one and one\"", got, err)
	}
	if got, err := mk.expand("$(B)", map[string]string{"A": "x"}); err != nil || got != "x and x" {
		t.Errorf("expand($(B), A=x) = %q, %v; want \"x and x\"", got, err)
	}
	if _, err := mk.expand("$(C)", nil); err == nil {
		t.Errorf("expand($(C)) of a self-reference: no error")
	}
	if got := mk.recipes["build"]; !slices.Equal(got, []string{"go build $(B)"}) {
		t.Errorf("recipes[build] = %q; want [\"go build $(B)\"]", got)
	}
}

func TestParseBuildCommand(t *testing.T) {
	bc, err := parseBuildCommand([]string{"GOOS=linux", "CGO_ENABLED=0", "go", "build", "-trimpath", "-o", "/out/x", "./cmd/x", "&&", "ls"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"CGO_ENABLED=0", "GOOS=linux"}; !slices.Equal(bc.env, want) {
		t.Errorf("env = %q; want %q", bc.env, want)
	}
	if want := []string{"go", "build", "-trimpath", "./cmd/x"}; !slices.Equal(bc.args, want) || bc.out != "/out/x" {
		t.Errorf("args, out = %q, %q; want %q, /out/x", bc.args, bc.out, want)
	}
}

func FuzzMakeExpand(f *testing.F) {
	f.Add("A := $(B)\nB = $(A)\n", "$(A)")
	f.Add("LDFLAGS := -X main.v=$(VERSION)\n", "$(LDFLAGS) ${LDFLAGS}")
	f.Fuzz(func(t *testing.T, file, s string) {
		mk := parseMakefile([]byte(file))
		got, err := mk.expand(s, map[string]string{"VERSION": "v"})
		if err == nil && makeRefRE.MatchString(got) {
			t.Errorf("expand(%q) = %q still holds a reference", s, got)
		}
	})
}
