package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/dxtra-ai/dxtra-proxy/internal/e2etest"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// binPath is the dxtra-proxy binary built once for the whole suite.
var binPath string

// parallelDefault is -parallel when the command line does not set it: most scenarios
// sleep on token lifetimes and backoff timers, not on the CPU.
const parallelDefault = "12"

func TestMain(m *testing.M) {
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		if err := flag.Set("test.parallel", parallelDefault); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	bin, cleanup, err := e2etest.Build(raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = bin
	code := m.Run()
	cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const (
	graphqlPath  = "/v1/graphql"
	graphqlQuery = `{"query":"{ dataControllers { id title } }"}`
)

// proc is a running dxtra-proxy binary.
type proc = e2etest.Proc

// startBinary starts the proxy and waits until it serves; it is killed at the
// end of the test if it still runs.
func startBinary(t *testing.T, env map[string]string) *proc {
	t.Helper()
	return e2etest.Start(t, binPath, env)
}

// eventually and consistently poll state that lives in the proxy process.
var (
	eventually   = e2etest.Eventually
	consistently = e2etest.Consistently
)

// newClient returns an HTTP client for talking to the proxy whose idle connections are
// closed when the test ends.
func newClient(t *testing.T, keepAlive bool) (*http.Client, *http.Transport) {
	tr := &http.Transport{
		MaxIdleConnsPerHost: 64,
		DisableKeepAlives:   !keepAlive,
		DisableCompression:  true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr
}

// do performs one request and returns its status, headers and body.
var do = e2etest.Do

// readyz returns /readyz's status and body (0 when the admin listener is gone).
func readyz(admin string) (int, string) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitReady(t *testing.T, p *proc) {
	t.Helper()
	eventually(t, 20*time.Second, "/readyz to say ready", func() bool {
		s, _ := readyz(p.Admin)
		return s == 200
	})
}

// metrics is one scrape of /metrics: series as printed ("name{labels}") → value.
type metrics map[string]float64

func scrape(t *testing.T, admin string) metrics {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	defer resp.Body.Close()
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	return m
}

// get sums the series of metric name carrying every label pair given as `k="v"`.
func (m metrics) get(name string, labels ...string) float64 {
	var sum float64
	for series, v := range m {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// newFake starts the fake Dxtra backend for one test.
func newFake(t *testing.T, opts dxtratest.Options) *dxtratest.Server {
	t.Helper()
	s := dxtratest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// authCall is one call to the auth service as the recording front saw it.
type authCall struct {
	at         time.Time // arrival
	ep         dxtratest.Endpoint
	status     int
	retryAfter string
}

// authFront sits between the proxy and the fake's auth handler and timestamps every
// call, so that backoff schedules can be measured.
type authFront struct {
	URL   string
	mu    sync.Mutex
	calls []authCall
}

func newAuthFront(t *testing.T, fake *dxtratest.Server) *authFront {
	t.Helper()
	a := &authFront{}
	h := fake.AuthHandler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := authCall{at: time.Now()}
		switch {
		case strings.HasSuffix(r.URL.Path, "/signin/pat"):
			c.ep = dxtratest.SignInPAT
		case strings.HasSuffix(r.URL.Path, "/token"):
			c.ep = dxtratest.TokenRefresh
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		c.status, c.retryAfter = rec.status, rec.Header().Get("Retry-After")
		a.mu.Lock()
		a.calls = append(a.calls, c)
		a.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	a.URL = srv.URL
	return a
}

// Calls returns the calls so far, oldest first.
func (a *authFront) Calls() []authCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]authCall(nil), a.calls...)
}

// waitCalls waits until at least n calls were seen and returns them.
func (a *authFront) waitCalls(t *testing.T, n int, timeout time.Duration) []authCall {
	t.Helper()
	var calls []authCall
	eventually(t, timeout, fmt.Sprintf("%d auth calls", n), func() bool {
		calls = a.Calls()
		return len(calls) >= n
	})
	return calls
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// proxyEnv points the proxy at the fake (auth through front, when given) and adds kv.
func proxyEnv(fake *dxtratest.Server, front *authFront, pat string, kv ...string) map[string]string {
	m := map[string]string{
		"DXTRA_AUTH_URL": fake.AuthURL,
		"DXTRA_API_URL":  fake.APIURL,
		"DXTRA_PAT":      pat,
	}
	if front != nil {
		m["DXTRA_AUTH_URL"] = front.URL
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// gqlError is the GraphQL-shaped error body the proxy answers itself.
type gqlError struct {
	Errors []struct {
		Message    string `json:"message"`
		Extensions struct {
			Code string `json:"code"`
		} `json:"extensions"`
	} `json:"errors"`
}

// errorCode returns the extensions.code of a proxy error body, or "" when body is not
// one.
func errorCode(body string) string {
	var e gqlError
	if json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 {
		return ""
	}
	return e.Errors[0].Extensions.Code
}

// wantData checks that body is the fake's answer to graphqlQuery.
func wantData(body string) error {
	var got struct {
		Data struct {
			DataControllers []dxtratest.DataController `json:"dataControllers"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		return fmt.Errorf("body %q: %w", truncate(body), err)
	}
	if diff := cmp.Diff(dxtratest.SampleDataControllers, got.Data.DataControllers); diff != "" {
		return fmt.Errorf("dataControllers differ (-want +got):\n%s", diff)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// queryOnce POSTs graphqlQuery through the proxy and reports anything but a 200 with
// the expected data as an error.
func queryOnce(ctx context.Context, c *http.Client, p *proc) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL(graphqlPath), strings.NewReader(graphqlQuery))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("status %d, reading body: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, truncate(string(b)))
	}
	return wantData(string(b))
}

// loadResult is what a load run observed.
type loadResult struct {
	mu     sync.Mutex
	ok     int
	failed int
	errs   []string // the first few failures
}

func (r *loadResult) add(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.ok++
		return
	}
	r.failed++
	if len(r.errs) < 5 {
		r.errs = append(r.errs, err.Error())
	}
}

func (r *loadResult) counts() (ok, failed int, errs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.failed, append([]string(nil), r.errs...)
}

// startLoad runs n clients sending graphqlQuery in a loop until the returned stop
// function is called; stop lets the requests in flight finish, waits for the clients
// and returns the result, so that every request sent is counted.
func startLoad(t *testing.T, p *proc, n int) (res *loadResult, stop func() *loadResult) {
	t.Helper()
	c, _ := newClient(t, true)
	res = &loadResult{}
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for !stopping.Load() {
				res.add(queryOnce(context.Background(), c, p))
			}
		})
	}
	var once sync.Once
	stop = func() *loadResult {
		once.Do(func() {
			stopping.Store(true)
			wg.Wait()
		})
		return res
	}
	t.Cleanup(func() { stop() })
	return res, stop
}

// freePort returns a loopback address nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
