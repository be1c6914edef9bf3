package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dxtra-ai/dxtra-proxy/internal/e2etest"
)

// binPath is the dxtra-proxy binary built once for the end-to-end tests.
var binPath string

func TestMain(m *testing.M) {
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

// proc is a running dxtra-proxy binary.
type proc = e2etest.Proc

// startBinary starts a long-running command and waits until it serves.
func startBinary(t *testing.T, env map[string]string, args ...string) *proc {
	t.Helper()
	return e2etest.Start(t, binPath, env, args...)
}

// eventually polls state that lives in the proxy process, behind a socket.
var eventually = e2etest.Eventually

// accepted reports whether the proxy has accepted a client's connection.
var accepted = e2etest.Accepted

// runBinary runs a short command to completion.
func runBinary(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = e2etest.Env(env)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("run %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// do performs one request and returns its status and body.
func do(t *testing.T, c *http.Client, method, url, body string, hdr map[string]string) (int, string) {
	t.Helper()
	status, _, b := e2etest.Do(t, c, method, url, body, hdr)
	return status, b
}

func readyStatus(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitReady(t *testing.T, p *proc) {
	t.Helper()
	eventually(t, 15*time.Second, "/readyz to say ready", func() bool { return readyStatus(t, p.Admin) == 200 })
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}
