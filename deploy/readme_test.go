package deploy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
)

const (
	readmeBegin    = "<!-- BEGIN deploy"
	readmeEnd      = "<!-- END deploy -->"
	k8sSection     = "Run in Kubernetes"
	composeSection = "Run with docker-compose"
)

// readmeRegion is README.md's deploy region, the single copy of the deploy
// commands: these tests read them from there.
func readmeRegion(t *testing.T) string {
	t.Helper()
	s := string(readRepoFile(t, "README.md"))
	b := strings.Index(s, readmeBegin)
	e := strings.Index(s, readmeEnd)
	if b < 0 || e < b {
		t.Fatalf("README.md has no %s ... %s region", readmeBegin, readmeEnd)
	}
	return s[b:e]
}

// shellWords splits a command line as a POSIX shell would into words and the
// operators && || ; | (as words of their own). Quotes are removed; $(...) is
// kept verbatim inside its word; an unquoted # starts a comment.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	r := []rune(s)
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			flush()
		case c == '#' && !inWord:
			return words, nil
		case c == '\'':
			j := i + 1
			for j < len(r) && r[j] != '\'' {
				j++
			}
			if j == len(r) {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(string(r[i+1 : j]))
			inWord, i = true, j
		case c == '"':
			j := i + 1
			for ; j < len(r) && r[j] != '"'; j++ {
				if r[j] == '\\' && j+1 < len(r) && strings.ContainsRune("\"\\$`", r[j+1]) {
					j++
				}
				cur.WriteRune(r[j])
			}
			if j == len(r) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord, i = true, j
		case c == '\\':
			if i+1 < len(r) {
				i++
				if r[i] != '\n' {
					cur.WriteRune(r[i])
					inWord = true
				}
			}
		case c == '$' && i+1 < len(r) && r[i+1] == '(':
			depth, j := 0, i+1
			for ; j < len(r); j++ {
				if r[j] == '(' {
					depth++
				} else if r[j] == ')' {
					if depth--; depth == 0 {
						break
					}
				}
			}
			if j == len(r) {
				return nil, fmt.Errorf("unterminated $( in %q", s)
			}
			cur.WriteString(string(r[i : j+1]))
			inWord, i = true, j
		case c == '&' || c == '|' || c == ';':
			flush()
			op := string(c)
			if (c == '&' || c == '|') && i+1 < len(r) && r[i+1] == c {
				op += string(c)
				i++
			}
			words = append(words, op)
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	flush()
	return words, nil
}

// readmeCommand is one simple command from the region.
type readmeCommand struct {
	section string
	words   []string
	line    string
}

var (
	fenceRE  = regexp.MustCompile("(?s)```[a-z]*\n(.*?)```")
	inlineRE = regexp.MustCompile("`([^`\n]+)`")
	// commandNames are what an inline code span must start with to count as a command.
	commandNames = []string{"kubectl ", "docker ", "kind ", "curl ", "cp ", "cd "}
)

// readmeCommands extracts every command from fenced code blocks and inline
// code spans that start with a command name, per "## " section.
func readmeCommands(t *testing.T, region string) []readmeCommand {
	t.Helper()
	var out []readmeCommand
	parts := regexp.MustCompile(`(?m)^## `).Split(region, -1)
	for _, part := range parts[1:] {
		title, body, _ := strings.Cut(part, "\n")
		title = strings.TrimSpace(title)
		add := func(line string) {
			words, err := shellWords(line)
			if err != nil {
				t.Errorf("README %q: %v", title, err)
				return
			}
			start := 0
			for i := 0; i <= len(words); i++ {
				if i == len(words) || slices.Contains([]string{"&&", "||", ";", "|"}, words[i]) {
					if i > start {
						out = append(out, readmeCommand{title, words[start:i], line})
					}
					start = i + 1
				}
			}
		}
		for _, m := range fenceRE.FindAllStringSubmatch(body, -1) {
			for _, line := range strings.Split(strings.ReplaceAll(m[1], "\\\n", " "), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					add(line)
				}
			}
		}
		prose := strings.ReplaceAll(fenceRE.ReplaceAllString(body, ""), "\n", " ")
		for _, m := range inlineRE.FindAllStringSubmatch(prose, -1) {
			for _, name := range commandNames {
				if strings.HasPrefix(m[1], name) {
					add(m[1])
				}
			}
		}
	}
	return out
}

// deployFacts is what the README's commands may refer to, read from the
// validated files.
type deployFacts struct {
	k8s         *k8sModel
	kustomDirs  map[string]bool           // dirs that deploy a workload
	deployments map[string][]string       // name → container names
	jobs        map[string][]string       // name → container names
	secretName  string                    // the Secret the manifests mount
	secretKey   string                    // its key, the file of DXTRA_PAT_FILE
	image       string                    // the proxy image in the manifests
	podPorts    map[int]string            // in the Pod: port → "listen" / "admin"
	profiles    map[string]*types.Project // compose profile → project
	published   map[int]string            // compose host port → "listen" / "admin"
	dockerArgs  map[string]bool           // ARG names in the Dockerfile
}

func loadDeployFacts(t *testing.T) *deployFacts {
	t.Helper()
	f := program(t)
	d := &deployFacts{
		k8s: loadKubernetes(t), kustomDirs: map[string]bool{},
		deployments: map[string][]string{}, jobs: map[string][]string{},
		podPorts: map[int]string{}, profiles: map[string]*types.Project{},
		published: map[int]string{}, dockerArgs: map[string]bool{},
	}
	for dir, built := range d.k8s.dirs {
		for _, w := range workloads(built) {
			d.kustomDirs[dir] = true
			var names []string
			for _, c := range allContainers(&w.pod.Spec) {
				names = append(names, c.Name)
			}
			switch w.obj.(type) {
			case *appsv1.Deployment:
				d.deployments[w.name] = names
			case *batchv1.Job:
				d.jobs[w.name] = names
			}
			p := findProxy(t, w)
			d.image = p.c.Image
			env := literalEnv(t, w.String(), p.c)
			if pf, ok := env["DXTRA_PAT_FILE"]; ok {
				d.secretKey = path.Base(pf)
			}
			for _, v := range w.pod.Spec.Volumes {
				if v.Secret != nil {
					d.secretName = v.Secret.SecretName
				}
			}
			if _, ok := w.obj.(*appsv1.Deployment); ok && p.native {
				d.podPorts[parseListenAddr(t, "DXTRA_LISTEN_ADDR", f.effective(t, env, "DXTRA_LISTEN_ADDR")).port] = "listen"
				d.podPorts[parseListenAddr(t, "DXTRA_ADMIN_ADDR", f.effective(t, env, "DXTRA_ADMIN_ADDR")).port] = "admin"
			}
		}
	}
	for _, profile := range []string{demoProfile, "live"} {
		p := loadCompose(t, []string{profile}, profile != demoProfile)
		d.profiles[profile] = p
		proxy := composeProxy(t, p)
		env := composeEnv(proxy)
		listen := parseListenAddr(t, "DXTRA_LISTEN_ADDR", f.effective(t, env, "DXTRA_LISTEN_ADDR"))
		admin := parseListenAddr(t, "DXTRA_ADMIN_ADDR", f.effective(t, env, "DXTRA_ADMIN_ADDR"))
		for _, port := range proxy.Ports {
			host, err := strconv.Atoi(port.Published)
			if err != nil {
				t.Fatalf("compose: published port %q", port.Published)
			}
			switch int(port.Target) {
			case listen.port:
				d.published[host] = "listen"
			case admin.port:
				d.published[host] = "admin"
			}
		}
	}
	df := parseDockerfile(t)
	for k := range df.globalArgs {
		d.dockerArgs[k] = true
	}
	for _, s := range df.stages {
		for _, n := range s.instructions("arg") {
			for _, a := range args(n) {
				k, _, _ := strings.Cut(a, "=")
				d.dockerArgs[k] = true
			}
		}
	}
	return d
}

// curlRequest is a parsed curl command line.
type curlRequest struct {
	method  string
	headers [][2]string
	data    string
	url     *url.URL
}

func parseCurl(words []string) (curlRequest, error) {
	var c curlRequest
	var raw string
	for i := 1; i < len(words); i++ {
		w := words[i]
		next := func() (string, error) {
			if i+1 >= len(words) {
				return "", fmt.Errorf("curl %s needs a value", w)
			}
			i++
			return words[i], nil
		}
		var err error
		switch {
		case w == "-H" || w == "--header":
			var h string
			if h, err = next(); err == nil {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return c, fmt.Errorf("curl header %q", h)
				}
				c.headers = append(c.headers, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
			}
		case w == "-d" || w == "--data" || w == "--data-raw":
			c.data, err = next()
		case w == "-X" || w == "--request":
			c.method, err = next()
		case w == "-o" || w == "--output":
			_, err = next()
		case regexp.MustCompile(`^-[sSfv]+$`).MatchString(w) || w == "--fail-with-body" || w == "--silent" || w == "--show-error":
		case strings.HasPrefix(w, "-"):
			return c, fmt.Errorf("curl option %s is unknown to this test", w)
		default:
			if raw != "" {
				return c, fmt.Errorf("curl with two URLs")
			}
			raw = w
		}
		if err != nil {
			return c, err
		}
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return c, err
	}
	c.url = u
	if c.method == "" {
		c.method = "GET"
		if c.data != "" {
			c.method = "POST"
		}
	}
	return c, nil
}

// checkCurl: a loopback URL whose port and path fit the listener behind it.
func checkCurl(t *testing.T, ctx string, words []string, ports map[int]string) {
	t.Helper()
	c, err := parseCurl(words)
	if err != nil {
		t.Errorf("%s: %v", ctx, err)
		return
	}
	if h := c.url.Hostname(); h != "127.0.0.1" && h != "localhost" {
		t.Errorf("%s: host %q; the proxy is reached on loopback", ctx, h)
	}
	port, _ := strconv.Atoi(c.url.Port())
	role, ok := ports[port]
	if !ok {
		t.Errorf("%s: nothing listens on port %d there (known: %v)", ctx, port, ports)
		return
	}
	wantRole := "admin"
	if c.url.Path == "/v1/graphql" {
		wantRole = "listen"
	} else if !slices.Contains([]string{"/healthz", "/readyz", "/metrics"}, c.url.Path) {
		t.Errorf("%s: path %q is neither /v1/graphql nor an admin endpoint", ctx, c.url.Path)
	}
	if role != wantRole {
		t.Errorf("%s: %s goes to port %d, the %s listener", ctx, c.url.Path, port, role)
	}
	if c.data != "" {
		var body struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal([]byte(c.data), &body); err != nil || body.Query == "" {
			t.Errorf("%s: body %q is not a GraphQL request (%v)", ctx, c.data, err)
		}
	}
}

// splitFlag returns the value of a flag given as "--f=v" or "--f v".
func flagValues(words []string, names ...string) []string {
	var out []string
	for i, w := range words {
		for _, n := range names {
			if v, ok := strings.CutPrefix(w, n+"="); ok {
				out = append(out, v)
			} else if w == n && i+1 < len(words) {
				out = append(out, words[i+1])
			}
		}
	}
	return out
}

func TestReadmeDeployCommands(t *testing.T) {
	region := readmeRegion(t)
	f := program(t)
	checkNamesKnown(t, f, "README.md deploy region", []byte(region))
	d := loadDeployFacts(t)
	cmds := readmeCommands(t, region)

	for _, title := range []string{k8sSection, composeSection} {
		if !strings.Contains(region, "## "+title+"\n") {
			t.Errorf("README deploy region has no \"## %s\" section", title)
		}
	}
	for dir := range d.kustomDirs {
		if !strings.Contains(region, "`"+path.Base(dir)+"/`") {
			t.Errorf("README deploy region does not mention `%s/`", path.Base(dir))
		}
	}

	forwarded := map[int]string{} // kubectl port-forward: local port → role
	seen := map[string]bool{}
	for _, c := range cmds {
		ctx := fmt.Sprintf("README %q: %s", c.section, strings.Join(c.words, " "))
		checkReadmeCommand(t, ctx, c, d, forwarded)
		seen[strings.Join(c.words, " ")] = true
	}
	for _, want := range []string{
		"kubectl apply -k deploy/kubernetes/native",
		"docker compose -f " + composeFile + " --profile " + demoProfile + " up --build",
		"cp " + composeExample + " " + composeEnvFile,
	} {
		if !seen[want] {
			t.Errorf("README deploy region lacks the command %q", want)
		}
	}
	calls := map[string]bool{}
	for _, c := range cmds {
		if i := slices.Index(c.words, "curl"); i >= 0 && slices.ContainsFunc(c.words[i:], func(w string) bool { return strings.HasSuffix(w, "/v1/graphql") }) {
			calls[c.section] = true
		}
	}
	for _, title := range []string{k8sSection, composeSection} {
		if !calls[title] {
			t.Errorf("README %q has no curl to /v1/graphql: not a path to a working call", title)
		}
	}
}

func checkReadmeCommand(t *testing.T, ctx string, c readmeCommand, d *deployFacts, forwarded map[int]string) {
	t.Helper()
	w := c.words
	hostPorts := d.published
	if c.section == k8sSection {
		hostPorts = forwarded
	}
	switch w[0] {
	case "kubectl":
		checkKubectl(t, ctx, w, d, forwarded)
	case "docker":
		checkDocker(t, ctx, w, d, c.section)
	case "kind":
		if len(w) != 4 || w[1] != "load" || w[2] != "docker-image" || w[3] != d.image {
			t.Errorf("%s: want kind load docker-image %s", ctx, d.image)
		}
	case "curl":
		checkCurl(t, ctx, w, hostPorts)
	case "cp":
		if len(w) != 3 || w[1] != composeExample || w[2] != composeEnvFile {
			t.Errorf("%s: want cp %s %s", ctx, composeExample, composeEnvFile)
		}
	case "cd":
		if len(w) != 2 {
			t.Errorf("%s: cd with %d arguments", ctx, len(w)-1)
		} else if st, err := os.Stat(repoPath(w[1])); err != nil || !st.IsDir() {
			t.Errorf("%s: no directory %s", ctx, w[1])
		}
	case "go":
		if len(w) < 2 || w[1] != "test" {
			t.Errorf("%s: only go test is known here", ctx)
		}
	default:
		t.Errorf("%s: %s is a command this test does not know; teach it or drop it", ctx, w[0])
	}
}

// kubeRef splits "deploy/name" or "job/name".
func kubeRef(ref string) (kind, name string) {
	kind, name, _ = strings.Cut(ref, "/")
	return kind, name
}

func checkKubectl(t *testing.T, ctx string, w []string, d *deployFacts, forwarded map[int]string) {
	t.Helper()
	if len(w) < 3 {
		t.Errorf("%s: too short", ctx)
		return
	}
	containersOf := func(ref string) ([]string, bool) {
		kind, name := kubeRef(ref)
		switch kind {
		case "deploy", "deployment":
			c, ok := d.deployments[name]
			return c, ok
		case "job":
			c, ok := d.jobs[name]
			return c, ok
		}
		return nil, false
	}
	checkContainer := func(ref string, rest []string) {
		cs, ok := containersOf(ref)
		if !ok {
			t.Errorf("%s: %s is no workload in %s", ctx, ref, k8sDir)
			return
		}
		if c := flagValues(rest, "-c", "--container"); len(c) != 1 || !slices.Contains(cs, c[0]) {
			t.Errorf("%s: name one container of %s with -c (one of %v)", ctx, ref, cs)
		}
	}
	switch sub := w[1]; sub {
	case "apply", "delete":
		if len(w) != 4 || w[2] != "-k" || !d.kustomDirs[w[3]] {
			t.Errorf("%s: want kubectl %s -k <one of %v>", ctx, sub, slices.Sorted(mapsKeys(d.kustomDirs)))
		}
	case "create":
		if len(w) != 6 || w[2] != "secret" || w[3] != "generic" {
			t.Errorf("%s: want kubectl create secret generic NAME --from-file=KEY=FILE", ctx)
			return
		}
		if w[4] != d.secretName {
			t.Errorf("%s: Secret %q; the manifests mount %q", ctx, w[4], d.secretName)
		}
		from, ok := strings.CutPrefix(w[5], "--from-file=")
		key, _, hasKey := strings.Cut(from, "=")
		if !ok || !hasKey || key != d.secretKey {
			t.Errorf("%s: want --from-file=%s=<file>, the key DXTRA_PAT_FILE reads", ctx, d.secretKey)
		}
	case "rollout":
		if len(w) != 4 || w[2] != "status" {
			t.Errorf("%s: want kubectl rollout status deploy/NAME", ctx)
		} else if _, ok := d.deployments[strings.TrimPrefix(w[3], "deploy/")]; !ok || !strings.HasPrefix(w[3], "deploy/") {
			t.Errorf("%s: %s is no Deployment in %s", ctx, w[3], k8sDir)
		}
	case "exec":
		dash := slices.Index(w, "--")
		if dash < 0 || dash+1 >= len(w) {
			t.Errorf("%s: want kubectl exec REF -c CONTAINER -- COMMAND", ctx)
			return
		}
		checkContainer(w[2], w[3:dash])
		inner := w[dash+1:]
		if inner[0] == "curl" {
			checkCurl(t, ctx, inner, d.podPorts)
		}
	case "logs":
		checkContainer(w[2], w[3:])
	case "wait":
		ref := w[len(w)-1]
		if kind, name := kubeRef(ref); kind != "job" || d.jobs[name] == nil {
			t.Errorf("%s: %s is no Job in %s", ctx, ref, k8sDir)
		}
		if !slices.Contains(w, "--for=condition=complete") {
			t.Errorf("%s: want --for=condition=complete", ctx)
		}
	case "port-forward":
		if _, ok := containersOf(w[2]); !ok {
			t.Errorf("%s: %s is no workload in %s", ctx, w[2], k8sDir)
		}
		for _, spec := range w[3:] {
			local, remote, ok := strings.Cut(spec, ":")
			if !ok {
				remote = local
			}
			l, err1 := strconv.Atoi(local)
			r, err2 := strconv.Atoi(remote)
			role, known := d.podPorts[r]
			if err1 != nil || err2 != nil || !known {
				t.Errorf("%s: %s does not forward to a dxtra-proxy port (%v)", ctx, spec, d.podPorts)
				continue
			}
			forwarded[l] = role
		}
	default:
		t.Errorf("%s: kubectl %s is unknown to this test; teach it or drop it", ctx, sub)
	}
}

func checkDocker(t *testing.T, ctx string, w []string, d *deployFacts, section string) {
	t.Helper()
	switch {
	case len(w) > 2 && w[1] == "build":
		if w[len(w)-1] != "." {
			t.Errorf("%s: build context %q; the README runs from the repository root, context .", ctx, w[len(w)-1])
		}
		if fs := flagValues(w, "-f", "--file"); len(fs) > 0 && fs[0] != "Dockerfile" {
			t.Errorf("%s: -f %s; the Dockerfile is ./Dockerfile", ctx, fs[0])
		}
		for _, a := range flagValues(w, "--build-arg") {
			if k, _, _ := strings.Cut(a, "="); !d.dockerArgs[k] {
				t.Errorf("%s: --build-arg %s: the Dockerfile declares no ARG %s", ctx, k, k)
			}
		}
		tags := flagValues(w, "-t", "--tag")
		if section == k8sSection && (len(tags) != 1 || tags[0] != d.image) {
			t.Errorf("%s: tag %v; the manifests run %s", ctx, tags, d.image)
		}
	case len(w) > 3 && w[1] == "compose":
		files := flagValues(w, "-f", "--file")
		if len(files) != 1 || files[0] != composeFile {
			t.Errorf("%s: want -f %s", ctx, composeFile)
		}
		profiles := flagValues(w, "--profile")
		if len(profiles) != 1 {
			t.Errorf("%s: name one --profile (%v); without one nothing starts", ctx, slices.Sorted(mapsKeys(d.profiles)))
			return
		}
		p, ok := d.profiles[profiles[0]]
		if !ok {
			t.Errorf("%s: compose.yaml has no profile %q", ctx, profiles[0])
			return
		}
		// The subcommand comes after the global flags.
		i := 2
		for i < len(w) && strings.HasPrefix(w[i], "-") {
			i += 2
		}
		if i >= len(w) {
			t.Errorf("%s: no subcommand", ctx)
			return
		}
		switch sub, rest := w[i], w[i+1:]; sub {
		case "up", "down", "ps", "build":
			for _, r := range rest {
				if !slices.Contains([]string{"--build", "-d", "--detach", "--wait"}, r) {
					t.Errorf("%s: %s %s is unknown to this test", ctx, sub, r)
				}
			}
		case "logs":
			for _, r := range rest {
				if _, ok := p.Services[r]; !ok && !strings.HasPrefix(r, "-") {
					t.Errorf("%s: profile %s runs no service %q", ctx, profiles[0], r)
				}
			}
		default:
			t.Errorf("%s: docker compose %s is unknown to this test", ctx, sub)
		}
	default:
		t.Errorf("%s: this docker command is unknown to this test", ctx)
	}
}

func TestShellWords(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"plain", "kubectl apply -k deploy/x", []string{"kubectl", "apply", "-k", "deploy/x"}},
		{"single quotes", `curl -d '{"a": 1}' x`, []string{"curl", "-d", `{"a": 1}`, "x"}},
		{"double quotes", `echo "a \"b\" $X"`, []string{"echo", `a "b" $X`}},
		{"command substitution", `docker build --build-arg V="$(git describe --tags)" .`, []string{"docker", "build", "--build-arg", "V=$(git describe --tags)", "."}},
		{"operators", "cd deploy && go test ./...; ls | wc", []string{"cd", "deploy", "&&", "go", "test", "./...", ";", "ls", "|", "wc"}},
		{"comment", "kubectl get pods # list", []string{"kubectl", "get", "pods"}},
		{"backslash", `a\ b c`, []string{"a b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := shellWords(tc.in)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("shellWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{`'open`, `"open`, `$(open`} {
		if _, err := shellWords(bad); err == nil {
			t.Errorf("shellWords(%q): no error", bad)
		}
	}
}

var plainRE = regexp.MustCompile(`^[A-Za-z0-9 ./:=_-]*$`)

func FuzzShellWords(f *testing.F) {
	f.Add(`docker build --build-arg V="$(git describe)" -t x:y .`)
	f.Add(`curl -sS -d '{"query":"{ __typename }"}' http://127.0.0.1:8080/v1/graphql && echo`)
	f.Add(`a\ b "c\"d" $((1)) # e`)
	f.Fuzz(func(t *testing.T, s string) {
		words, err := shellWords(s)
		if err != nil {
			return
		}
		// A line of plain words splits exactly like strings.Fields.
		if plainRE.MatchString(s) && !slices.Equal(words, strings.Fields(s)) {
			t.Errorf("shellWords(%q) = %q; want %q", s, words, strings.Fields(s))
		}
	})
}

func TestParseCurl(t *testing.T) {
	c, err := parseCurl([]string{"curl", "-sS", "-H", "Content-Type: application/json", "-d", `{"query":"q"}`, "http://127.0.0.1:8080/v1/graphql"})
	if err != nil {
		t.Fatal(err)
	}
	if c.method != "POST" || c.url.Port() != "8080" || c.url.Path != "/v1/graphql" || c.data != `{"query":"q"}` || len(c.headers) != 1 {
		t.Errorf("parseCurl() = %+v; want a POST to 8080 /v1/graphql with one header", c)
	}
	if _, err := parseCurl([]string{"curl", "--insecure", "http://x"}); err == nil {
		t.Errorf("parseCurl(--insecure): no error for an option the test does not know")
	}
}
