package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the main module's directory, the parent of this module.
var repoRoot = func() string {
	abs, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	return abs
}()

// binDir holds the dxtra-proxy binary built for these tests; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// repoPath joins slash-separated elements onto the repository root.
func repoPath(elem ...string) string {
	return filepath.Join(append([]string{repoRoot}, elem...)...)
}

// readRepoFile returns a repository file's content or fails the test.
func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// programFacts is what the real program says about itself in its -h output:
// the DXTRA_* variables it knows and their defaults.
type programFacts struct {
	bin      string            // path of the built binary
	names    map[string]bool   // every DXTRA_* name in -h output
	defaults map[string]string // variable → default column ("" when none)
	usage    string            // the whole -h output
}

var (
	factsOnce sync.Once
	facts     *programFacts
	factsErr  error
)

// program builds ./cmd/dxtra-proxy once per test binary and reads its -h output.
func program(t *testing.T) *programFacts {
	t.Helper()
	factsOnce.Do(func() { facts, factsErr = loadProgram() })
	if factsErr != nil {
		t.Fatal(factsErr)
	}
	return facts
}

func loadProgram() (*programFacts, error) {
	var err error
	binDir, err = os.MkdirTemp("", "dxtra-deploy-test-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(binDir, "dxtra-proxy")
	build := exec.Command("go", "build", "-o", bin, "./cmd/dxtra-proxy")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/dxtra-proxy: %v\n%s", err, out)
	}
	// -h with no DXTRA_* variable set, so the defaults are the program's own.
	cmd := exec.Command(bin, "-h")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DXTRA_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("dxtra-proxy -h: %v\n%s", err, stderr.String())
	}
	usage := stdout.String() + stderr.String()
	f := parseUsage(usage)
	f.bin = bin
	if len(f.names) == 0 {
		return nil, fmt.Errorf("dxtra-proxy -h names no DXTRA_* variable:\n%s", usage)
	}
	return f, nil
}

var (
	envNameRE   = regexp.MustCompile(`\bDXTRA_[A-Z0-9_]*[A-Z0-9]\b`)
	usageLineRE = regexp.MustCompile(`^\s*(DXTRA_[A-Z0-9_]+)\s+(\S+)`)
)

// parseUsage reads the -h table: one line per variable, its name first and its
// default (or "-" for none) second.
func parseUsage(usage string) *programFacts {
	f := &programFacts{names: map[string]bool{}, defaults: map[string]string{}, usage: usage}
	for _, n := range envNameRE.FindAllString(usage, -1) {
		f.names[n] = true
	}
	sc := bufio.NewScanner(strings.NewReader(usage))
	for sc.Scan() {
		m := usageLineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if _, seen := f.defaults[m[1]]; seen {
			continue
		}
		def := m[2]
		if def == "-" {
			def = ""
		}
		f.defaults[m[1]] = def
	}
	return f
}

// defaultOf returns the program's default for a variable, failing the test
// when -h shows none.
func (f *programFacts) defaultOf(t *testing.T, name string) string {
	t.Helper()
	d, ok := f.defaults[name]
	if !ok {
		t.Fatalf("dxtra-proxy -h lists no default for %s:\n%s", name, f.usage)
	}
	return d
}

// effective returns a variable's value given an explicit setting, else the default.
func (f *programFacts) effective(t *testing.T, env map[string]string, name string) string {
	t.Helper()
	if v, ok := env[name]; ok {
		return v
	}
	return f.defaultOf(t, name)
}

// checkNamesKnown fails for every DXTRA_* name in text that -h does not list.
func checkNamesKnown(t *testing.T, f *programFacts, file string, text []byte) {
	t.Helper()
	seen := map[string]bool{}
	for _, n := range envNameRE.FindAllString(string(text), -1) {
		if seen[n] {
			continue
		}
		seen[n] = true
		if !f.names[n] {
			t.Errorf("%s uses %s, which dxtra-proxy -h does not list", file, n)
		}
	}
}

// listenAddr is a parsed DXTRA_LISTEN_ADDR / DXTRA_ADMIN_ADDR value.
type listenAddr struct {
	host string
	port int
}

// loopback reports whether only the host itself can reach the address.
func (a listenAddr) loopback() bool {
	if a.host == "localhost" {
		return true
	}
	ip := net.ParseIP(a.host)
	return ip != nil && ip.IsLoopback()
}

// wildcard reports whether the address listens on every interface.
func (a listenAddr) wildcard() bool {
	return a.host == "" || a.host == "0.0.0.0" || a.host == "::"
}

func parseListenAddr(t *testing.T, name, v string) listenAddr {
	t.Helper()
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		t.Fatalf("%s=%q: bad port", name, v)
	}
	return listenAddr{host: host, port: p}
}

func parseDuration(t *testing.T, name, v string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// splitList splits a comma list, trimming blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func TestProgramUsageParsed(t *testing.T) {
	f := program(t)
	// The variables every deployment file leans on must have a parsable default.
	for _, name := range []string{"DXTRA_LISTEN_ADDR", "DXTRA_ADMIN_ADDR"} {
		parseListenAddr(t, name, f.defaultOf(t, name))
	}
	for _, name := range []string{"DXTRA_SHUTDOWN_DELAY", "DXTRA_SHUTDOWN_TIMEOUT"} {
		parseDuration(t, name, f.defaultOf(t, name))
	}
	for _, name := range []string{"DXTRA_PAT_FILE", "DXTRA_ALLOWED_HOSTS", "DXTRA_ENABLE_QUIT"} {
		if !f.names[name] {
			t.Errorf("dxtra-proxy -h does not list %s", name)
		}
	}
}

func TestParseUsage(t *testing.T) {
	usage := "Usage: dxtra-proxy [serve|demo]\n\nEnvironment:\n" +
		"  DXTRA_PAT\t-\tthe PAT; exactly one of DXTRA_PAT / DXTRA_PAT_FILE\n" +
		"  DXTRA_ADMIN_ADDR    127.0.0.1:9090    /healthz listener\n"
	f := parseUsage(usage)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range f.names {
			if !yield(n) {
				return
			}
		}
	})
	if want := []string{"DXTRA_ADMIN_ADDR", "DXTRA_PAT", "DXTRA_PAT_FILE"}; !slices.Equal(names, want) {
		t.Errorf("parseUsage names = %v; want %v", names, want)
	}
	if got := f.defaults["DXTRA_ADMIN_ADDR"]; got != "127.0.0.1:9090" {
		t.Errorf("parseUsage default of DXTRA_ADMIN_ADDR = %q; want 127.0.0.1:9090", got)
	}
	if got, ok := f.defaults["DXTRA_PAT"]; !ok || got != "" {
		t.Errorf("parseUsage default of DXTRA_PAT = %q, %v; want \"\", true", got, ok)
	}
}
