package reliability

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// outcome is one request of the shutdown scenario as its client saw it.
type outcome struct {
	id         string
	start, end time.Time
	status     int
	err        error
	readErr    bool // the error came while reading the body: the response was cut
	complete   bool // 200 with exactly the expected body
}

// TestShutdownUnderLoad: SIGTERM while 32 clients run (half of them POSTing GraphQL on
// keep-alive connections, half streaming a 4-chunk response on fresh connections).
// Every request that reached the upstream gets its complete 200; the others fail only
// at the connection, never with a 5xx or a cut body; streams in flight at SIGTERM are
// drained; the proxy exits 0 within DXTRA_SHUTDOWN_TIMEOUT.
func TestShutdownUnderLoad(t *testing.T) {
	const shutdownTimeout = 10 * time.Second
	fake := newFake(t, dxtratest.Options{RecordLimit: 1 << 20})
	p := startBinary(t, proxyEnv(fake, nil, fake.NewPAT(), "DXTRA_SHUTDOWN_TIMEOUT", shutdownTimeout.String()))
	waitReady(t, p)

	const streamBody = "chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
	keepAlive, _ := newClient(t, true)
	fresh, _ := newClient(t, false)
	var (
		mu       sync.Mutex
		outcomes []outcome
		nextID   atomic.Int64
		ok       atomic.Int64
	)
	one := func(c *http.Client, stream bool) outcome {
		o := outcome{id: fmt.Sprint(nextID.Add(1)), start: time.Now()}
		var req *http.Request
		if stream {
			req, _ = http.NewRequest(http.MethodGet, p.URL("/stream?chunks=4&interval=50ms&id="+o.id), nil)
		} else {
			req, _ = http.NewRequest(http.MethodPost, p.URL(graphqlPath+"?id="+o.id), strings.NewReader(graphqlQuery))
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.Do(req)
		if err != nil {
			o.err, o.end = err, time.Now()
			return o
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		o.status, o.end = resp.StatusCode, time.Now()
		if err != nil {
			o.err, o.readErr = err, true
			return o
		}
		if stream {
			o.complete = o.status == http.StatusOK && string(b) == streamBody
		} else {
			o.complete = o.status == http.StatusOK && wantData(string(b)) == nil
		}
		return o
	}
	var wg sync.WaitGroup
	for i := range 32 {
		c, stream := keepAlive, false
		if i%2 == 1 {
			c, stream = fresh, true
		}
		wg.Go(func() {
			for {
				o := one(c, stream)
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				if o.complete {
					ok.Add(1)
				}
				// The listener is gone once a dial is refused; the process may be too.
				select {
				case <-p.Done():
					return
				default:
				}
				if errors.Is(o.err, syscall.ECONNREFUSED) {
					return
				}
			}
		})
	}

	eventually(t, 20*time.Second, "300 completed requests before SIGTERM", func() bool { return ok.Load() >= 300 })
	sigterm := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitCode int
	select {
	case <-p.Done():
		exitCode = p.Cmd.ProcessState.ExitCode()
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("still running %s after SIGTERM", shutdownTimeout+5*time.Second)
	}
	exited := time.Since(sigterm)
	wg.Wait()

	if exitCode != 0 {
		t.Errorf("exit code after SIGTERM = %d; want 0", exitCode)
	}
	if exited > shutdownTimeout {
		t.Errorf("exited %s after SIGTERM; want within DXTRA_SHUTDOWN_TIMEOUT (%s)", exited, shutdownTimeout)
	}

	forwarded := map[string]bool{}
	for _, r := range fake.Requests() {
		if q, err := url.ParseQuery(r.RawQuery); err == nil && q.Get("id") != "" {
			forwarded[q.Get("id")] = true
		}
	}
	var complete, refused, unsent, drained int
	for _, o := range outcomes {
		switch {
		case o.complete:
			complete++
			if o.start.Before(sigterm) && o.end.After(sigterm) {
				drained++
			}
		case o.readErr:
			t.Errorf("request %s: the response was cut after status %d: %v", o.id, o.status, o.err)
		case o.err == nil:
			t.Errorf("request %s: status %d with an incomplete or wrong body; want a complete 200", o.id, o.status)
		case forwarded[o.id]:
			t.Errorf("request %s reached the upstream but its client got no answer: %v", o.id, o.err)
		case errors.Is(o.err, syscall.ECONNREFUSED):
			refused++
		default:
			// A keep-alive connection closed as idle, or one the kernel had queued
			// but the server never accepted: the request was never taken in.
			unsent++
			t.Logf("request %s (%s → %s after SIGTERM) failed at the connection: %v", o.id, o.start.Sub(sigterm), o.end.Sub(sigterm), o.err)
		}
	}
	t.Logf("SIGTERM after %d complete requests; exit %d after %s; %d complete (%d drained across SIGTERM), %d refused, %d not taken in",
		ok.Load(), exitCode, exited.Round(time.Millisecond), complete, drained, refused, unsent)
	if drained == 0 {
		t.Errorf("no request in flight at SIGTERM completed; the scenario did not exercise draining")
	}
	if refused == 0 {
		t.Errorf("no client saw the listener closed; the clients stopped too early")
	}
}
