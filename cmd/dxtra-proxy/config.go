package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/dxtra-ai/dxtra-proxy/proxy"
)

// envPrefix is the prefix of every configuration variable.
const envPrefix = "DXTRA"

// config is the program's whole configuration, read from DXTRA_* variables.
// The envconfig tags are the single source of the variable names, defaults and
// descriptions: -h output and README's table are generated from them.
type config struct {
	PAT             string        `envconfig:"PAT" desc:"the Personal Access Token; exactly one of DXTRA_PAT / DXTRA_PAT_FILE"`
	PATFile         string        `envconfig:"PAT_FILE" desc:"file holding the PAT (e.g. a Kubernetes Secret volume); re-read when it changes"`
	AuthURL         string        `envconfig:"AUTH_URL" default:"https://auth.dxtra.ai" desc:"auth service base URL"`
	AuthAPIPrefix   string        `envconfig:"AUTH_API_PREFIX" default:"/v1" desc:"path prefix of the auth endpoints; may be set empty"`
	APIURL          string        `envconfig:"API_URL" default:"https://api.dxtra.ai" desc:"upstream base URL; the request path is appended"`
	Role            string        `envconfig:"ROLE" default:"user" desc:"X-Hasura-Role stamped on requests that name none"`
	AllowedRoles    string        `envconfig:"ALLOWED_ROLES" desc:"comma list of roles a caller may choose with X-Hasura-Role (default: the value of DXTRA_ROLE)"`
	ListenAddr      string        `envconfig:"LISTEN_ADDR" default:"127.0.0.1:8080" desc:"proxy listener; unix:/path/to.sock for a Unix socket"`
	AdminAddr       string        `envconfig:"ADMIN_ADDR" default:"127.0.0.1:9090" desc:"/healthz, /readyz, /metrics listener"`
	RefreshBefore   time.Duration `envconfig:"REFRESH_BEFORE" default:"2m" desc:"renew when this much token lifetime is left (at most half the lifetime)"`
	MaxBodyBytes    int64         `envconfig:"MAX_BODY_BYTES" default:"1048576" desc:"larger request bodies get 413"`
	UpstreamTimeout time.Duration `envconfig:"UPSTREAM_TIMEOUT" default:"60s" desc:"time to the upstream's response headers"`
	ShutdownDelay   time.Duration `envconfig:"SHUTDOWN_DELAY" default:"0s" desc:"after SIGTERM, keep accepting new requests this long (may be zero)"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s" desc:"then drain in-flight requests for at most this long"`
	AllowedHosts    string        `envconfig:"ALLOWED_HOSTS" default:"localhost,127.0.0.1,::1" desc:"Host names the proxy answers to (DNS-rebinding guard); * turns the check off"`
	AllowedOrigins  string        `envconfig:"ALLOWED_ORIGINS" desc:"browser origins (scheme://host[:port]) allowed to call the proxy; others are refused"`
	EnableQuit      bool          `envconfig:"ENABLE_QUIT" default:"false" desc:"serve POST /quitquitquit on the admin listener"`
	AllowHTTP       bool          `envconfig:"ALLOW_HTTP" default:"false" desc:"permit http:// auth/API URLs on non-loopback hosts"`
	CAFile          string        `envconfig:"CA_FILE" desc:"extra PEM CA bundle trusted for upstream TLS"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat       string        `envconfig:"LOG_FORMAT" default:"json" desc:"json or console"`

	// Derived by validate.
	authBase       string   // AuthURL + AuthAPIPrefix, no trailing slash
	apiURL         *url.URL // parsed APIURL
	allowedRoles   []string
	allowedHosts   []string
	allowedOrigins []string
}

// configError is a bad configuration: exit code 2 and a one-line message that
// names the variable. It never carries a secret or DXTRA_PAT's value.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// loadConfig reads the environment. It checks only the variables' forms; what
// a command needs beyond that (a PAT) is checked by requirePAT.
func loadConfig() (*config, error) {
	var c config
	if err := envconfig.Process(envPrefix, &c); err != nil {
		// envconfig's own message repeats the raw value, which could be a
		// secret pasted into the wrong variable: name the variable only.
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return nil, configErrorf("%s: not a valid %s", pe.KeyName, describeType(pe.TypeName))
		}
		return nil, configErrorf("configuration: %v", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func describeType(t string) string {
	switch t {
	case "time.Duration":
		return "duration (e.g. 30s, 2m)"
	case "bool":
		return "boolean (true or false)"
	case "int64":
		return "integer"
	}
	return t
}

// validate checks every variable's form and fills the derived fields.
func (c *config) validate() error {
	var err error
	if c.authBase, err = c.checkURL("DXTRA_AUTH_URL", c.AuthURL); err != nil {
		return err
	}
	switch p := c.AuthAPIPrefix; {
	case p == "":
	case !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# \t"):
		return configErrorf("DXTRA_AUTH_API_PREFIX: must be empty or a path starting with /, e.g. /v1")
	default:
		c.authBase += strings.TrimRight(p, "/")
	}
	base, err := c.checkURL("DXTRA_API_URL", c.APIURL)
	if err != nil {
		return err
	}
	c.apiURL, _ = url.Parse(base)

	c.Role = strings.TrimSpace(c.Role)
	if r, err := proxy.ParseRoleList(c.Role); err != nil || len(r) != 1 {
		return configErrorf("DXTRA_ROLE: must be one role name, e.g. user")
	}
	if _, set := os.LookupEnv("DXTRA_ALLOWED_ROLES"); !set {
		c.allowedRoles = []string{c.Role}
	} else if c.allowedRoles, err = proxy.ParseRoleList(c.AllowedRoles); err != nil {
		return configErrorf("DXTRA_ALLOWED_ROLES: %v", err)
	}

	if err := checkListenAddr(c.ListenAddr); err != nil {
		return configErrorf("DXTRA_LISTEN_ADDR: %v", err)
	}
	if err := checkListenAddr(c.AdminAddr); err != nil {
		return configErrorf("DXTRA_ADMIN_ADDR: %v", err)
	}
	if c.ListenAddr == c.AdminAddr && !strings.HasSuffix(c.ListenAddr, ":0") {
		return configErrorf("DXTRA_ADMIN_ADDR: must differ from DXTRA_LISTEN_ADDR")
	}

	for _, d := range []struct {
		name      string
		v         time.Duration
		zeroOK    bool
		atLeast   time.Duration
		atLeastIs string
	}{
		{"DXTRA_REFRESH_BEFORE", c.RefreshBefore, false, time.Second, "1s"},
		{"DXTRA_UPSTREAM_TIMEOUT", c.UpstreamTimeout, false, 0, ""},
		{"DXTRA_SHUTDOWN_DELAY", c.ShutdownDelay, true, 0, ""},
		{"DXTRA_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, false, 0, ""},
	} {
		switch {
		case d.v < 0 || (d.v == 0 && !d.zeroOK):
			if d.zeroOK {
				return configErrorf("%s: must not be negative", d.name)
			}
			return configErrorf("%s: must be a positive duration", d.name)
		case d.v < d.atLeast:
			return configErrorf("%s: must be at least %s", d.name, d.atLeastIs)
		}
	}
	if c.MaxBodyBytes <= 0 {
		return configErrorf("DXTRA_MAX_BODY_BYTES: must be a positive number of bytes")
	}

	if c.allowedHosts, err = parseList(c.AllowedHosts); err != nil {
		return configErrorf("DXTRA_ALLOWED_HOSTS: %v", err)
	}
	for _, h := range c.allowedHosts {
		if h == "*" && len(c.allowedHosts) > 1 {
			return configErrorf("DXTRA_ALLOWED_HOSTS: * turns the check off and cannot be combined with names")
		}
		if strings.ContainsAny(h, "/:@ ") && net.ParseIP(h) == nil {
			return configErrorf("DXTRA_ALLOWED_HOSTS: %q is not a host name (no scheme or port)", h)
		}
	}
	if strings.TrimSpace(c.AllowedOrigins) != "" {
		if c.allowedOrigins, err = parseList(c.AllowedOrigins); err != nil {
			return configErrorf("DXTRA_ALLOWED_ORIGINS: %v", err)
		}
		for i, o := range c.allowedOrigins {
			if c.allowedOrigins[i], err = proxy.NormalizeOrigin(o); err != nil {
				return configErrorf("DXTRA_ALLOWED_ORIGINS: %v", err)
			}
		}
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			return configErrorf("DXTRA_CA_FILE: cannot read %s", c.CAFile)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return configErrorf("DXTRA_LOG_LEVEL: must be debug, info, warn or error")
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		return configErrorf("DXTRA_LOG_FORMAT: must be json or console")
	}
	return nil
}

// checkURL parses an auth or API base URL and returns it without a trailing
// slash. Plain http is allowed only to loopback unless DXTRA_ALLOW_HTTP is set.
func (c *config) checkURL(name, raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", configErrorf("%s: must be an absolute URL such as https://host", name)
	}
	if u.User != nil {
		return "", configErrorf("%s: must not contain credentials", name)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", configErrorf("%s: must not have a query or fragment", name)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !c.AllowHTTP && !isLoopbackHost(u.Hostname()) {
			return "", configErrorf("%s: http:// is only allowed for loopback hosts; use https:// or set DXTRA_ALLOW_HTTP=true", name)
		}
	default:
		return "", configErrorf("%s: scheme must be https or http", name)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// checkListenAddr accepts host:port or unix:/path.
func checkListenAddr(a string) error {
	if p, ok := strings.CutPrefix(a, "unix:"); ok {
		if p == "" {
			return errors.New("unix: needs a socket path, e.g. unix:/run/dxtra/proxy.sock")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("must be host:port (e.g. 127.0.0.1:8080) or unix:/path")
	}
	if host != "" && net.ParseIP(host) == nil && !strings.EqualFold(host, "localhost") {
		return errors.New("host must be an IP address or localhost")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return errors.New("port is not valid")
	}
	return nil
}

// parseList splits a comma list, trims spaces and rejects empty items and an
// empty list.
func parseList(s string) ([]string, error) {
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, errors.New("empty item in the comma list")
		}
		out = append(out, item)
	}
	return out, nil
}

// requirePAT checks that exactly one PAT source is configured and that a PAT
// file is readable and not empty.
func (c *config) requirePAT() error {
	switch {
	case c.PAT != "" && c.PATFile != "":
		return configErrorf("DXTRA_PAT: set exactly one of DXTRA_PAT and DXTRA_PAT_FILE, not both")
	case c.PATFile != "":
		if _, err := readPATFile(c.PATFile); err != nil {
			return configErrorf("DXTRA_PAT_FILE: %v", err)
		}
	case strings.TrimSpace(c.PAT) == "":
		if _, set := os.LookupEnv("DXTRA_PAT"); set {
			return configErrorf("DXTRA_PAT: is empty")
		}
		return configErrorf("DXTRA_PAT: not set; set DXTRA_PAT or DXTRA_PAT_FILE to your Personal Access Token")
	}
	return nil
}

// usageFormat lists every variable with its default; envconfig fills it from
// the struct tags, so -h cannot drift from the code.
const usageFormat = `{{range .}}  {{usage_key .}}	{{if usage_default .}}{{usage_default .}}{{else}}-{{end}}	{{usage_description .}}
{{end}}`

func writeUsage(w io.Writer) error {
	fmt.Fprint(w, `dxtra-proxy: a local authenticating reverse proxy for the Dxtra GraphQL API.
Apps send plain HTTP to the listener; the proxy forwards it with a fresh JWT
obtained from your Personal Access Token, renewing it in the background.

Usage:
  dxtra-proxy [serve]     run the proxy
  dxtra-proxy demo        run against an embedded fake Dxtra backend (no credentials)
  dxtra-proxy token       exchange the PAT once and print the access token (JWT)
  dxtra-proxy healthcheck exit 0 when the running proxy's /readyz says ready, else 1
  dxtra-proxy version     print version, commit and Go version
  dxtra-proxy -h          this help

Environment (name, default, meaning):
`)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if err := envconfig.Usagef(envPrefix, &config{}, tw, usageFormat); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprint(w, `
HTTPS_PROXY and NO_PROXY are honoured for outbound traffic.
Exit codes: 0 clean exit, 1 runtime failure, 2 bad configuration.
`)
	return err
}
