// Command dxtra-proxy is a local authenticating reverse proxy for the Dxtra
// GraphQL API. Apps send plain, credential-free HTTP to the listener; the proxy
// forwards it with a fresh JWT obtained from a Personal Access Token and renews
// that JWT in the background. Run "dxtra-proxy -h" for commands and settings.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// version and commit are stamped at build time with -ldflags -X (see Makefile).
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err (if any) and maps it to the process exit code: 0 clean,
// 2 bad configuration, 1 anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "dxtra-proxy: %v\n", err)
	var ce *configError
	if errors.As(err, &ce) {
		return 2
	}
	return 1
}

// run executes one command. It returns when the command is done or, for the
// long-running ones, when ctx ends and shutdown has finished.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	if isHelp(cmd) || (len(args) > 0 && isHelp(args[0])) {
		return writeUsage(stdout)
	}
	switch cmd {
	case "version":
		_, err := fmt.Fprintf(stdout, "dxtra-proxy %s (commit %s, %s)\n", version, commit, runtime.Version())
		return err
	case "healthcheck":
		return healthcheck(ctx, args, stdout)
	}
	if len(args) > 0 {
		return configErrorf("%s: unexpected argument %q (settings come from DXTRA_* variables; see -h)", cmd, args[0])
	}
	switch cmd {
	case "serve", "demo", "token":
	default:
		_ = writeUsage(stderr)
		return configErrorf("unknown command %q", cmd)
	}

	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	switch cmd {
	case "token":
		return printToken(ctx, cfg, stdout)
	case "demo":
		return demo(ctx, cfg, log, stdout)
	default:
		if err := cfg.requirePAT(); err != nil {
			return err
		}
		return serve(ctx, cfg, log, nil)
	}
}

func isHelp(a string) bool {
	switch a {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}
