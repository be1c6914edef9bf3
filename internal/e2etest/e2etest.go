// Package e2etest runs the real dxtra-proxy binary for end-to-end tests: it
// builds the binary once, starts it with a clean environment on ephemeral
// loopback ports, and reads the listener addresses from its start-up log line.
// It is shared by the tests of cmd/dxtra-proxy and reliability and is not part
// of the product.
package e2etest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Build compiles cmd/dxtra-proxy (with the race detector when race is true)
// into a fresh temporary directory. cleanup removes it.
func Build(race bool) (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "dxtra-proxy-e2e")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "dxtra-proxy")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/dxtra-ai/dxtra-proxy/cmd/dxtra-proxy")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building dxtra-proxy: %w", err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// Env is the environment of a test process: the caller's minus every DXTRA_*
// variable, then ephemeral loopback listeners and info logging, then extra.
func Env(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DXTRA_") {
			env = append(env, kv)
		}
	}
	vars := map[string]string{
		"DXTRA_LISTEN_ADDR": "127.0.0.1:0",
		"DXTRA_ADMIN_ADDR":  "127.0.0.1:0",
		"DXTRA_LOG_LEVEL":   "info",
	}
	for k, v := range extra {
		vars[k] = v
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// SyncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Proc is a running dxtra-proxy. Its methods may be called from the test's
// goroutine and from goroutines it starts.
type Proc struct {
	Listen string // proxy listener address, from the start-up log line
	Admin  string // admin listener address, from the start-up log line
	Stdout SyncBuffer
	Stderr SyncBuffer
	Cmd    *exec.Cmd

	t    testing.TB
	done chan struct{}
	err  error // Wait's result, valid after done is closed
}

// Start runs bin with args and Env(env), waits for its start-up log line and
// returns. The process is killed when the test ends if it still runs; its log
// is printed if the test failed.
func Start(t testing.TB, bin string, env map[string]string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, done: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Env = Env(env)
	p.Cmd.Stdout = &p.Stdout
	pr, pw := io.Pipe()
	p.Cmd.Stderr = pw
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := false
		for sc.Scan() {
			line := sc.Text()
			p.Stderr.Write([]byte(line + "\n"))
			if !once && strings.Contains(line, `"dxtra-proxy starting"`) {
				var l struct{ Listen, Admin string }
				if json.Unmarshal([]byte(line), &l) == nil {
					p.Listen, p.Admin = l.Listen, l.Admin
					once = true
					close(started)
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = p.Cmd.Wait()
		pw.Close()
		<-drained // every line the process wrote is in p.Stderr before Done
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("log of dxtra-proxy %v:\n%s", args, p.Stderr.String())
		}
	})
	select {
	case <-started:
	case <-p.done:
		t.Fatalf("dxtra-proxy %v exited before serving: %v\nstderr:\n%s", args, p.err, p.Stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("dxtra-proxy %v did not start\nstderr:\n%s", args, p.Stderr.String())
	}
	return p
}

// URL returns the proxy listener's URL for path.
func (p *Proc) URL(path string) string { return "http://" + p.Listen + path }

// Done is closed when the process has exited and all its stderr is in Stderr.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error; valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// Wait returns the exit code once the process ends, failing the test if that
// takes longer than timeout.
func (p *Proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("dxtra-proxy still running after %s", timeout)
		return -1
	}
}

// FDs counts the process's open file descriptors.
func (p *Proc) FDs() int {
	p.t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Cmd.Process.Pid))
	if err != nil {
		p.t.Fatalf("reading the proxy's fds: %v", err)
	}
	return len(ents)
}

// Accepted reports whether the server side of conn, a client connection to
// the proxy over IPv4 loopback, has been accepted by the process. Until then
// the connection sits in the kernel's accept queue, attached to no file: its
// inode in /proc/net/tcp is 0, and closing the listener resets it.
func Accepted(t testing.TB, conn net.Conn) bool {
	t.Helper()
	hexAddr := func(a net.Addr) string {
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil || !ap.Addr().Is4() {
			t.Fatalf("Accepted: %v is not an IPv4 address", a)
		}
		b := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], ap.Port())
	}
	// The server side's local address is the client's remote one.
	local, remote := hexAddr(conn.RemoteAddr()), hexAddr(conn.LocalAddr())
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("Accepted: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		f := strings.Fields(line)
		if len(f) >= 10 && f[1] == local && f[2] == remote {
			return f[9] != "0"
		}
	}
	return false
}

// Do performs one request and returns its status, headers and body; a transport
// error or an unreadable body fails the test.
func Do(t testing.TB, c *http.Client, method, url, body string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// Eventually polls cond until it holds or timeout passes. It is for state that
// lives in another process, behind a socket, where there is nothing to wait on.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Consistently polls cond for the whole window and fails as soon as it does
// not hold: the way to observe that something does not happen in another
// process.
func Consistently(t testing.TB, window time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("%s stopped holding within %s", what, window)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
