package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

const graphqlQuery = `{"query":"{ dataControllers { id title } }"}`

// newFake starts the fake Dxtra backend for one test.
func newFake(t *testing.T, opts dxtratest.Options) *dxtratest.Server {
	t.Helper()
	s := dxtratest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// proxyEnv points the proxy at the fake.
func proxyEnv(s *dxtratest.Server, kv ...string) map[string]string {
	m := map[string]string{
		"DXTRA_AUTH_URL": s.AuthURL,
		"DXTRA_API_URL":  s.APIURL,
	}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestServeForwardsWithToken(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT()))
	waitReady(t, p)

	status, body := do(t, http.DefaultClient, "POST", "http://"+p.Listen+"/v1/graphql", graphqlQuery,
		map[string]string{"Content-Type": "application/json"})
	if status != 200 || !strings.Contains(body, `"dataControllers"`) {
		t.Fatalf("POST /v1/graphql = %d %s; want 200 with data", status, body)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 || !reqs[0].TokenValid || reqs[0].Role != "user" {
		t.Fatalf("upstream saw %+v; want one request with a valid token and role user", reqs)
	}
}

func TestDemoAnswersThePrintedCurlLine(t *testing.T) {
	p := startBinary(t, map[string]string{}, "demo")
	eventually(t, 10*time.Second, "the curl line on stdout", func() bool {
		return strings.Contains(p.Stdout.String(), "curl ")
	})
	m := regexp.MustCompile(`curl -s (http://\S+) -H '([^:]+): ([^']+)' -d '([^']+)'`).FindStringSubmatch(p.Stdout.String())
	if m == nil {
		t.Fatalf("no curl line in stdout:\n%s", p.Stdout.String())
	}
	// README's "Try it" shows this output for the default address.
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	shown := regexp.MustCompile("(?s)\nprints\n\n```\n(.*?)```\n").FindSubmatch(readme)
	if shown == nil {
		t.Fatalf("README has no demo output block after \"prints\"")
	}
	if got := strings.ReplaceAll(p.Stdout.String(), p.Listen, "127.0.0.1:8080"); got != string(shown[1]) {
		t.Errorf("demo printed\n%s\nREADME shows\n%s", got, shown[1])
	}
	waitReady(t, p)
	status, body := do(t, http.DefaultClient, "POST", m[1], m[4], map[string]string{m[2]: m[3]})
	if status != 200 || !strings.Contains(body, `"dataControllers"`) {
		t.Fatalf("the printed curl line got %d %s; want 200 with dataControllers", status, body)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("demo exit code after SIGTERM = %d; want 0", code)
	}
}

func TestTokenPrintsOneJWT(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	pat := fake.NewPAT()
	stdout, stderr, code := runBinary(t, proxyEnv(fake, "DXTRA_PAT", pat), "token")
	if code != 0 {
		t.Fatalf("token exit code = %d; stderr: %s", code, stderr)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$`).MatchString(stdout) {
		t.Fatalf("token stdout = %q; want exactly one JWT line", stdout)
	}
	// The printed token works at the API.
	status, body := do(t, http.DefaultClient, "POST", fake.APIURL+"/v1/graphql", graphqlQuery, map[string]string{
		"Authorization": "Bearer " + strings.TrimSpace(stdout),
		"Content-Type":  "application/json",
	})
	if status != 200 || !strings.Contains(body, `"data"`) {
		t.Fatalf("API with the printed token = %d %s; want data", status, body)
	}

	fake.RevokePAT(pat)
	stdout, stderr, code = runBinary(t, proxyEnv(fake, "DXTRA_PAT", pat), "token")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "invalid-pat") {
		t.Fatalf("token with a revoked PAT: exit %d, stdout %q, stderr %q; want exit 1, nothing on stdout, invalid-pat", code, stdout, stderr)
	}
	if strings.Contains(stderr, pat) {
		t.Fatalf("stderr contains the PAT: %s", stderr)
	}
}

func TestHealthcheck(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	good := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT()))
	waitReady(t, good)
	revoked := fake.NewPAT()
	fake.RevokePAT(revoked)
	bad := startBinary(t, proxyEnv(fake, "DXTRA_PAT", revoked))

	if _, stderr, code := runBinary(t, map[string]string{"DXTRA_ADMIN_ADDR": good.Admin}, "healthcheck"); code != 0 {
		t.Errorf("healthcheck of a ready proxy: exit %d (%s); want 0", code, stderr)
	}
	if _, _, code := runBinary(t, nil, "healthcheck", "-addr", good.Admin); code != 0 {
		t.Errorf("healthcheck -addr of a ready proxy: exit %d; want 0", code)
	}
	eventually(t, 10*time.Second, "the refused PAT to show in /readyz", func() bool {
		resp, err := http.Get("http://" + bad.Admin + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b := make([]byte, 512)
		n, _ := resp.Body.Read(b)
		return resp.StatusCode == 503 && strings.Contains(string(b[:n]), "invalid-pat")
	})
	if _, stderr, code := runBinary(t, map[string]string{"DXTRA_ADMIN_ADDR": bad.Admin}, "healthcheck"); code != 1 || !strings.Contains(stderr, "invalid-pat") {
		t.Errorf("healthcheck of a proxy with a refused PAT: exit %d (%s); want 1 and the reason", code, stderr)
	}
	if _, _, code := runBinary(t, map[string]string{"DXTRA_ADMIN_ADDR": "127.0.0.1:1"}, "healthcheck"); code != 1 {
		t.Errorf("healthcheck with nothing listening: exit %d; want 1", code)
	}
}

func TestPATFileRotation(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	dir := t.TempDir()
	patFile := filepath.Join(dir, "pat")
	oldPAT, newPAT := fake.NewPAT(), fake.NewPAT()
	if err := os.WriteFile(patFile, []byte(oldPAT+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT_FILE", patFile))
	waitReady(t, p)
	before := fake.Calls(dxtratest.SignInPAT)

	// Kubernetes swaps a Secret volume's content through a symlink rename;
	// an atomic rename of a new file is the same thing to a reader.
	tmp := filepath.Join(dir, "pat.new")
	if err := os.WriteFile(tmp, []byte("  "+newPAT+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, patFile); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	eventually(t, 10*time.Second, "the new PAT to be exchanged", func() bool {
		return fake.Calls(dxtratest.SignInPAT) > before
	})
	t.Logf("new PAT exchanged %s after the file changed", time.Since(changed).Round(time.Millisecond))
	// The old PAT is now dead (and with it, as a test knob, the refresh
	// tokens issued from it): the proxy keeps working only if it switched.
	fake.RevokePAT(oldPAT)
	// The line is written before the exchange, but reaches p.Stderr through a pipe
	// and a reader goroutine, which may not have caught up yet.
	eventually(t, 5*time.Second, "a log line about the PAT change", func() bool {
		return strings.Contains(p.Stderr.String(), "pat file changed")
	})
	if strings.Contains(p.Stderr.String(), newPAT) || strings.Contains(p.Stderr.String(), oldPAT) {
		t.Fatalf("a PAT appears in the log")
	}
	status, body := do(t, http.DefaultClient, "POST", "http://"+p.Listen+"/v1/graphql", graphqlQuery, nil)
	if status != 200 {
		t.Fatalf("after rotation: %d %s; want 200", status, body)
	}
	if readyStatus(t, p.Admin) != 200 {
		t.Fatalf("not ready after rotation")
	}
}

func TestSIGTERMLetsInFlightRequestFinish(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT(), "DXTRA_SHUTDOWN_TIMEOUT", "10s"))
	waitReady(t, p)

	type result struct {
		status int
		body   string
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + p.Listen + "/slow?delay=1500ms")
		if err != nil {
			res <- result{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		_, err = io.Copy(b, resp.Body)
		if err != nil {
			res <- result{resp.StatusCode, "read: " + err.Error()}
			return
		}
		res <- result{resp.StatusCode, b.String()}
	}()
	eventually(t, 10*time.Second, "the slow request to reach the upstream", func() bool {
		for _, r := range fake.Requests() {
			if r.Path == "/slow" {
				return true
			}
		}
		return false
	})
	p.Signal(syscall.SIGTERM)
	r := <-res
	if r.status != 200 {
		t.Fatalf("in-flight request during shutdown: %d %q; want 200", r.status, r.body)
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code = %d; want 0", code)
	}
}

func TestShutdownDelayKeepsServing(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT(), "DXTRA_SHUTDOWN_DELAY", "3s"))
	waitReady(t, p)
	p.Signal(syscall.SIGTERM)
	eventually(t, 2*time.Second, "/readyz to turn 503", func() bool { return readyStatus(t, p.Admin) == 503 })
	status, body := do(t, http.DefaultClient, "POST", "http://"+p.Listen+"/v1/graphql", graphqlQuery, nil)
	if status != 200 {
		t.Fatalf("request during SHUTDOWN_DELAY: %d %s; want 200", status, body)
	}
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code = %d; want 0", code)
	}
}

func TestUnixSocketListener(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT(), "DXTRA_LISTEN_ADDR", "unix:"+sock))
	waitReady(t, p)
	c := unixClient(sock)
	status, body := do(t, c, "POST", "http://localhost/v1/graphql", graphqlQuery, nil)
	if status != 200 || !strings.Contains(body, "dataControllers") {
		t.Fatalf("over the Unix socket: %d %s; want 200 with data", status, body)
	}
	p.Signal(syscall.SIGINT)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code = %d; want 0", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left behind after exit: %v", err)
	}
}

func TestQuitQuitQuit(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT(), "DXTRA_ENABLE_QUIT", "true"))
	waitReady(t, p)
	if status, _ := do(t, http.DefaultClient, "POST", "http://"+p.Admin+"/quitquitquit", "", map[string]string{"Origin": "https://evil.example"}); status != 403 {
		t.Fatalf("quitquitquit with Origin = %d; want 403", status)
	}
	if status, _ := do(t, http.DefaultClient, "POST", "http://"+p.Admin+"/quitquitquit", "", nil); status != 200 {
		t.Fatalf("quitquitquit = %d; want 200", status)
	}
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code = %d; want 0", code)
	}

	q := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT()))
	if status, _ := do(t, http.DefaultClient, "POST", "http://"+q.Admin+"/quitquitquit", "", nil); status != 404 && status != 405 {
		t.Fatalf("quitquitquit when not enabled = %d; want 404/405", status)
	}
}

func TestReadinessNamesAMissingRole(t *testing.T) {
	fake := newFake(t, dxtratest.Options{Roles: []string{"user", "me"}})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT(), "DXTRA_ROLE", "analyst"))
	eventually(t, 10*time.Second, "/readyz to name the missing role", func() bool {
		status, body := do(t, http.DefaultClient, "GET", "http://"+p.Admin+"/readyz", "", nil)
		return status == 503 && strings.Contains(body, `"analyst"`)
	})
}

func TestBareAuthPrefix(t *testing.T) {
	fake := newFake(t, dxtratest.Options{BarePrefix: true})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT(), "DXTRA_AUTH_API_PREFIX", ""))
	waitReady(t, p)
	if status, body := do(t, http.DefaultClient, "POST", "http://"+p.Listen+"/v1/graphql", graphqlQuery, nil); status != 200 {
		t.Fatalf("with an empty DXTRA_AUTH_API_PREFIX: %d %s; want 200", status, body)
	}
}

func TestOptionsStarIsRefused(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT()))
	conn, err := net.Dial("tcp", p.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("OPTIONS * = %d; want 400", resp.StatusCode)
	}
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("upstream saw %d requests; want none", n)
	}
}

// TestShutdownServesAConnectionAcceptedBeforeTheListenerClosed: a client that
// connected just before shutdown but whose request arrives after the listener
// closed still gets its answer (net/http's Shutdown alone drops a request it
// reads after shutdown began).
func TestShutdownServesAConnectionAcceptedBeforeTheListenerClosed(t *testing.T) {
	fake := newFake(t, dxtratest.Options{})
	p := startBinary(t, proxyEnv(fake, "DXTRA_PAT", fake.NewPAT()))
	waitReady(t, p)
	conn, err := net.Dial("tcp", p.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The proxy must have accepted it: a connection still in the kernel's accept
	// queue is reset when the listener closes, and no server can answer that one.
	eventually(t, 5*time.Second, "the proxy to accept the connection", func() bool {
		return accepted(t, conn)
	})
	p.Signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, "the listener to close", func() bool {
		c, err := net.Dial("tcp", p.Listen)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	req := "POST /v1/graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(graphqlQuery)) + "\r\n\r\n" + graphqlQuery
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("request sent on a connection accepted before the listener closed: %v; want an answer", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "dataControllers") {
		t.Fatalf("got %d %s; want 200 with data", resp.StatusCode, body)
	}
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code = %d; want 0", code)
	}
}
