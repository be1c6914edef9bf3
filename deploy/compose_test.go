package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	composeFile    = "deploy/compose/compose.yaml"
	composeEnvFile = "deploy/compose/.env" // git-ignored, holds the PAT
	composeExample = "deploy/compose/.env.example"
	demoProfile    = "demo"
)

// loadCompose loads compose.yaml with the compose-spec loader (schema
// validation included) from a copy of deploy/compose, so that a developer's
// real .env never takes part: withEnv puts .env.example there as .env, with a
// dummy PAT.
func loadCompose(t *testing.T, profiles []string, withEnv bool) *types.Project {
	t.Helper()
	p, err := loadComposeErr(t, profiles, withEnv)
	if err != nil {
		t.Fatalf("load %s with profiles %v: %v", composeFile, profiles, err)
	}
	return p
}

func loadComposeErr(t *testing.T, profiles []string, withEnv bool) (*types.Project, error) {
	t.Helper()
	root := t.TempDir() // stands for the repository root
	dir := filepath.Join(root, "deploy", "compose")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), readRepoFile(t, composeFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if withEnv {
		env := strings.ReplaceAll(string(readRepoFile(t, composeExample)), "DXTRA_PAT=\n", "DXTRA_PAT=dummy-pat-for-tests\n")
		if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(env), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "compose.yaml")},
		cli.WithWorkingDirectory(dir),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	// Paths were resolved inside the copy: map them back onto the repository.
	for name, s := range p.Services {
		if s.Build != nil {
			rel, err := filepath.Rel(root, s.Build.Context)
			if err != nil {
				return nil, err
			}
			s.Build.Context = filepath.Join(repoRoot, rel)
			p.Services[name] = s
		}
	}
	return p, nil
}

// composeProxy returns the one enabled service that runs dxtra-proxy.
func composeProxy(t *testing.T, p *types.Project) types.ServiceConfig {
	t.Helper()
	var found []types.ServiceConfig
	for _, s := range p.Services {
		if isProxyImage(s.Image) || s.Build != nil {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("profiles %v: want exactly one dxtra-proxy service, have %d", p.Profiles, len(found))
	}
	return found[0]
}

// composeEnv returns a service's resolved environment (nil values dropped).
func composeEnv(s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

// appCallRE finds the app's call to the proxy by name.
var appCallRE = regexp.MustCompile(`http://([A-Za-z0-9.-]+):(\d+)/v1/graphql`)

func TestComposeProfiles(t *testing.T) {
	f := program(t)
	checkNamesKnown(t, f, composeFile, readRepoFile(t, composeFile))

	// Without a profile nothing starts: the stack is either demo or live, never
	// an app without its proxy.
	if p := loadCompose(t, nil, false); len(p.Services) != 0 {
		t.Errorf("with no profile, services %v start; put every service in a profile", slices.Sorted(mapsKeys(p.Services)))
	}

	for _, tc := range []struct {
		profile string
		withEnv bool // the demo needs no .env at all
		command []string
	}{
		{demoProfile, false, []string{"demo"}},
		{"live", true, []string{"serve"}},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			p := loadCompose(t, []string{tc.profile}, tc.withEnv)
			proxy := composeProxy(t, p)
			if !slices.Equal(proxy.Command, tc.command) {
				t.Errorf("%s: command %v; want %v", proxy.Name, proxy.Command, tc.command)
			}
			checkComposeProxy(t, f, proxy)
			if tc.withEnv {
				// The PAT comes from the git-ignored env file, nowhere else.
				if env := composeEnv(proxy); env["DXTRA_PAT"] != "dummy-pat-for-tests" {
					t.Errorf("%s: DXTRA_PAT does not come from %s", proxy.Name, composeEnvFile)
				}
				checkPATOnlyFromEnvFile(t, proxy.Name)
			}
			apps := 0
			for _, s := range p.Services {
				if s.Name != proxy.Name {
					apps++
					checkComposeApp(t, proxy, s)
				}
			}
			if apps == 0 {
				t.Errorf("profile %s starts no example app", tc.profile)
			}
		})
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// checkPATOnlyFromEnvFile: compose.yaml itself never sets DXTRA_PAT(_FILE),
// and the live proxy requires the env file.
func checkPATOnlyFromEnvFile(t *testing.T, service string) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{repoPath(filepath.FromSlash(composeFile))},
		cli.WithProfiles([]string{"live"}), cli.WithoutEnvironmentResolution, cli.WithResolvedPaths(false))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load %s without env resolution: %v", composeFile, err)
	}
	s := raw.Services[service]
	for _, name := range []string{"DXTRA_PAT", "DXTRA_PAT_FILE"} {
		if _, ok := s.Environment[name]; ok {
			t.Errorf("%s: compose.yaml sets %s; the PAT belongs in %s", service, name, composeEnvFile)
		}
	}
	required := false
	for _, ef := range s.EnvFiles {
		if filepath.Base(ef.Path) == ".env" && bool(ef.Required) {
			required = true
		}
	}
	if !required {
		t.Errorf("%s: env_file .env is not required: a missing PAT file should stop compose with a clear message", service)
	}
}

// checkComposeProxy: the image's hardening, the healthcheck, listeners,
// the Host guard and the published ports.
func checkComposeProxy(t *testing.T, f *programFacts, s types.ServiceConfig) {
	t.Helper()
	ctx := "service " + s.Name
	if s.Build == nil {
		t.Errorf("%s: not built from the Dockerfile", ctx)
	} else {
		df := s.Build.Dockerfile
		if df == "" {
			df = "Dockerfile"
		}
		ctxDir := s.Build.Context
		if filepath.Clean(ctxDir) != repoRoot {
			t.Errorf("%s: build context %q is not the repository root", ctx, s.Build.Context)
		}
		if _, err := os.Stat(filepath.Join(ctxDir, df)); err != nil {
			t.Errorf("%s: dockerfile: %v", ctx, err)
		}
	}
	if s.User != fmt.Sprintf("%d:%d", nonRootUID, nonRootUID) {
		t.Errorf("%s: user %q; want %d:%d", ctx, s.User, nonRootUID, nonRootUID)
	}
	checkComposeHardening(t, s)
	if s.HealthCheck == nil || s.HealthCheck.Disable {
		t.Errorf("%s: no healthcheck, so depends_on cannot wait for a token", ctx)
	} else if want := []string{"CMD", dockerEntrypoint(t), "healthcheck"}; !slices.Equal(s.HealthCheck.Test, want) {
		t.Errorf("%s: healthcheck %v; want %v", ctx, s.HealthCheck.Test, want)
	}

	env := composeEnv(s)
	checkNamesKnownMap(t, f, ctx, env)
	listen := parseListenAddr(t, "DXTRA_LISTEN_ADDR", f.effective(t, env, "DXTRA_LISTEN_ADDR"))
	admin := parseListenAddr(t, "DXTRA_ADMIN_ADDR", f.effective(t, env, "DXTRA_ADMIN_ADDR"))
	if !listen.wildcard() {
		t.Errorf("%s: DXTRA_LISTEN_ADDR host %q: other containers cannot reach it", ctx, listen.host)
	}
	hosts := splitList(f.effective(t, env, "DXTRA_ALLOWED_HOSTS"))
	if slices.Contains(hosts, "*") {
		t.Errorf("%s: DXTRA_ALLOWED_HOSTS=* turns the DNS-rebinding guard off", ctx)
	}
	names := append([]string{s.Name}, networkAliases(s)...)
	for _, n := range names {
		if !slices.Contains(hosts, n) {
			t.Errorf("%s: reachable as %q but DXTRA_ALLOWED_HOSTS %v does not list it", ctx, n, hosts)
		}
	}
	for _, port := range s.Ports {
		target := int(port.Target)
		pctx := fmt.Sprintf("%s: published port %s->%d", ctx, port.Published, target)
		if port.HostIP != "127.0.0.1" {
			t.Errorf("%s: host_ip %q; publish on 127.0.0.1 only, or anyone on the network borrows your PAT", pctx, port.HostIP)
		}
		if port.Published != strconv.Itoa(target) {
			t.Errorf("%s: publish on the same port number so the README's URLs hold", pctx)
		}
		switch target {
		case listen.port:
			for _, n := range []string{"localhost", "127.0.0.1"} {
				if !slices.Contains(hosts, n) {
					t.Errorf("%s: DXTRA_ALLOWED_HOSTS %v lacks %q, so calls from the host get 403", pctx, hosts, n)
				}
			}
		case admin.port:
			if !admin.wildcard() {
				t.Errorf("%s: DXTRA_ADMIN_ADDR host %q is unreachable through the published port", pctx, admin.host)
			}
		default:
			t.Errorf("%s: the proxy listens on %d and %d only", pctx, listen.port, admin.port)
		}
	}
}

// checkComposeHardening: the same restrictions as the Kubernetes manifests.
func checkComposeHardening(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	ctx := "service " + s.Name
	if !s.ReadOnly {
		t.Errorf("%s: read_only is not true", ctx)
	}
	if !slices.Contains(s.CapDrop, "ALL") || len(s.CapAdd) > 0 {
		t.Errorf("%s: cap_drop %v, cap_add %v; want ALL dropped, none added", ctx, s.CapDrop, s.CapAdd)
	}
	if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("%s: security_opt lacks no-new-privileges:true", ctx)
	}
	if s.Privileged || s.NetworkMode == "host" {
		t.Errorf("%s: privileged or on the host network", ctx)
	}
	if s.User == "" || strings.HasPrefix(s.User, "0") || strings.HasPrefix(s.User, "root") {
		t.Errorf("%s: user %q; run as a non-root user", ctx, s.User)
	}
}

func networkAliases(s types.ServiceConfig) []string {
	var out []string
	for _, n := range s.Networks {
		if n != nil {
			out = append(out, n.Aliases...)
		}
	}
	return out
}

// checkComposeApp: the example app calls the proxy by a name the Host guard
// accepts, on the proxy port, once the proxy is healthy.
func checkComposeApp(t *testing.T, proxy, app types.ServiceConfig) {
	t.Helper()
	ctx := "service " + app.Name
	dep, ok := app.DependsOn[proxy.Name]
	if !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("%s: depends_on %s is not condition: service_healthy (have %+v)", ctx, proxy.Name, app.DependsOn)
	}
	checkComposeHardening(t, app)
	line := strings.Join(append(slices.Clone(app.Entrypoint), app.Command...), " ")
	m := appCallRE.FindStringSubmatch(line)
	if m == nil {
		t.Errorf("%s: does not call http://<proxy>:<port>/v1/graphql", ctx)
		return
	}
	env := composeEnv(proxy)
	if !slices.Contains(append([]string{proxy.Name}, networkAliases(proxy)...), m[1]) {
		t.Errorf("%s: calls %q, which is not a name of %s", ctx, m[1], proxy.Name)
	}
	if hosts := splitList(env["DXTRA_ALLOWED_HOSTS"]); !slices.Contains(hosts, m[1]) {
		t.Errorf("%s: calls %q, but %s's DXTRA_ALLOWED_HOSTS %v refuses that Host", ctx, m[1], proxy.Name, hosts)
	}
	if listen, ok := env["DXTRA_LISTEN_ADDR"]; ok {
		if a := parseListenAddr(t, "DXTRA_LISTEN_ADDR", listen); strconv.Itoa(a.port) != m[2] {
			t.Errorf("%s: calls port %s; the proxy listens on %d", ctx, m[2], a.port)
		}
	}
}

// checkNamesKnownMap fails for DXTRA_* keys that -h does not list.
func checkNamesKnownMap(t *testing.T, f *programFacts, ctx string, env map[string]string) {
	t.Helper()
	for k := range env {
		if strings.HasPrefix(k, "DXTRA_") && !f.names[k] {
			t.Errorf("%s: sets %s, which dxtra-proxy -h does not list", ctx, k)
		}
	}
}

func TestComposeEnvExample(t *testing.T) {
	f := program(t)
	data := readRepoFile(t, composeExample)
	checkNamesKnown(t, f, composeExample, data)
	env, err := dotenv.UnmarshalBytesWithLookup(data, nil)
	if err != nil {
		t.Fatalf("parse %s: %v", composeExample, err)
	}
	if v, ok := env["DXTRA_PAT"]; !ok || v != "" {
		t.Errorf("%s: want an empty DXTRA_PAT= line for the user to fill in (never a real PAT)", composeExample)
	}
	for k := range env {
		if !strings.HasPrefix(k, "DXTRA_") {
			t.Errorf("%s: %s is not a dxtra-proxy variable", composeExample, k)
		}
	}
	// The filled-in copy must never be committed.
	cmd := exec.Command("git", "check-ignore", "-q", composeEnvFile)
	cmd.Dir = repoRoot
	if err := cmd.Run(); err != nil {
		if _, lookErr := exec.LookPath("git"); lookErr != nil {
			t.Skip("no git to ask")
		}
		t.Errorf("git check-ignore %s: %v; it must be git-ignored", composeEnvFile, err)
	}
}

func TestComposeLoaderRejects(t *testing.T) {
	// The loader validates against the compose-spec schema: a misspelt key fails.
	dir := t.TempDir()
	file := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(file, []byte("services:\n  a:\n    image: x\n    helthcheck: {test: [CMD, true]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{file}, cli.WithWorkingDirectory(dir), cli.WithName("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "helthcheck") {
		t.Errorf("LoadProject(misspelt key) error = %v; want one naming helthcheck", err)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestComposeDemoRuns runs the real binary with the demo service's command and
// environment — only the ports moved to free loopback ones — and checks that
// the image's healthcheck passes with that environment and that the proxy
// answers the example app's Host while still refusing others.
func TestComposeDemoRuns(t *testing.T) {
	f := program(t)
	p := loadCompose(t, []string{demoProfile}, false)
	proxy := composeProxy(t, p)
	env := composeEnv(proxy)
	listenPort, adminPort := freePort(t), freePort(t)
	admin := parseListenAddr(t, "DXTRA_ADMIN_ADDR", f.effective(t, env, "DXTRA_ADMIN_ADDR"))
	listen := parseListenAddr(t, "DXTRA_LISTEN_ADDR", f.effective(t, env, "DXTRA_LISTEN_ADDR"))

	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var run []string
	for k, v := range env {
		switch k {
		case "DXTRA_LISTEN_ADDR":
			v = fmt.Sprintf("127.0.0.1:%d", listenPort) // not 0.0.0.0: tests stay on loopback
		case "DXTRA_ADMIN_ADDR":
			v = fmt.Sprintf("127.0.0.1:%d", adminPort)
		}
		run = append(run, k+"="+v)
	}
	cmd := exec.Command(f.bin, proxy.Command...)
	cmd.Env = append(base, run...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-done
		}
	})

	// The healthcheck as the container runs it: DXTRA_ADMIN_ADDR as compose
	// sets it (the wildcard host dials the local listener).
	hcEnv := append(slices.Clone(base), fmt.Sprintf("DXTRA_ADMIN_ADDR=%s", net.JoinHostPort(admin.host, strconv.Itoa(adminPort))))
	deadline := time.Now().Add(20 * time.Second)
	for {
		hc := exec.Command(f.bin, proxy.HealthCheck.Test[2:]...)
		hc.Env = hcEnv
		hcOut, err := hc.CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthcheck never passed: %v\n%s\nproxy output:\n%s", err, hcOut, out.String())
		}
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("demo exited: %v\n%s", err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}

	app := p.Services["app"]
	m := appCallRE.FindStringSubmatch(strings.Join(app.Command, " "))
	if m == nil {
		t.Fatal("the app service calls no http://<proxy>:<port>/v1/graphql")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	call := func(host string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/v1/graphql", listenPort), strings.NewReader(`{"query":"{ __typename }"}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST Host %s: %v", host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, host := range []string{net.JoinHostPort(m[1], m[2]), fmt.Sprintf("localhost:%d", listen.port), fmt.Sprintf("127.0.0.1:%d", listen.port)} {
		if code, body := call(host); code != http.StatusOK || !strings.Contains(body, `"data"`) {
			t.Errorf("POST /v1/graphql with Host %s = %d %s; want 200 with data", host, code, body)
		}
	}
	if code, _ := call("attacker.example"); code != http.StatusForbidden {
		t.Errorf("POST /v1/graphql with Host attacker.example = %d; want 403 (the DNS-rebinding guard)", code)
	}

	// The README's compose curls, as a user pastes them on the host: the
	// published port leads to the listener behind it.
	ports := map[string]int{}
	for _, port := range proxy.Ports {
		switch int(port.Target) {
		case listen.port:
			ports[port.Published] = listenPort
		case admin.port:
			ports[port.Published] = adminPort
		}
	}
	n := 0
	for _, c := range readmeCommands(t, readmeRegion(t)) {
		if c.section != composeSection || c.words[0] != "curl" {
			continue
		}
		n++
		req, err := parseCurl(c.words)
		if err != nil {
			t.Errorf("README %q: %v", c.line, err)
			continue
		}
		port, ok := ports[req.url.Port()]
		if !ok {
			t.Errorf("README %q: port %s is not published", c.line, req.url.Port())
			continue
		}
		target := *req.url
		target.Host = fmt.Sprintf("127.0.0.1:%d", port)
		hr, err := http.NewRequest(req.method, target.String(), strings.NewReader(req.data))
		if err != nil {
			t.Fatal(err)
		}
		hr.Host = req.url.Host // what curl sends
		for _, h := range req.headers {
			hr.Header.Add(h[0], h[1])
		}
		resp, err := client.Do(hr)
		if err != nil {
			t.Errorf("README %q: %v", c.line, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || (req.url.Path == "/v1/graphql" && !strings.Contains(string(body), `"data"`)) {
			t.Errorf("README %q against the demo = %d %s; want 200 with data", c.line, resp.StatusCode, body)
		}
	}
	if n == 0 {
		t.Errorf("README %q has no curl to try against the demo", composeSection)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("demo after SIGTERM: %v; want exit 0\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("demo did not stop within 30 s of SIGTERM")
	}
}
