package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	k8sDir = "deploy/kubernetes"
	// nonRootUID is distroless' "nonroot" user, set numerically everywhere.
	nonRootUID = 65532
	// graceMargin is what terminationGracePeriodSeconds must leave beyond
	// DXTRA_SHUTDOWN_DELAY + DXTRA_SHUTDOWN_TIMEOUT.
	graceMargin = 5 * time.Second
	// defaultGrace is Kubernetes' terminationGracePeriodSeconds when unset.
	defaultGrace = 30 * time.Second
)

// kustomization is the part of kustomize's Kustomization these examples use;
// decoding is strict, so a field outside it fails until the test learns it.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// kinds maps apiVersion/kind to the real Go type a document must decode into.
var kinds = map[string]func() any{
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"apps/v1/Deployment":                 func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":                       func() any { return &batchv1.Job{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return &kustomization{} },
}

// manifest is one decoded YAML document.
type manifest struct {
	file string // repository-relative, slash-separated
	doc  int    // index of the document in its file
	kind string // apiVersion/kind
	name string
	obj  any
}

func (m manifest) String() string { return fmt.Sprintf("%s[%d] %s %q", m.file, m.doc, m.kind, m.name) }

// decodeStrict decodes every document of a multi-document YAML stream into its
// Kubernetes API type, rejecting unknown and duplicate fields.
func decodeStrict(file string, data []byte) ([]manifest, error) {
	var out []manifest
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", file, i, err)
		}
		if len(probe) == 0 {
			continue // only comments
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", file, i, err)
		}
		key := tm.APIVersion + "/" + tm.Kind
		mk, ok := kinds[key]
		if !ok {
			return nil, fmt.Errorf("%s[%d]: no Go type known for %q (add it to kinds)", file, i, key)
		}
		obj := mk()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s[%d] %s: %w", file, i, key, err)
		}
		name := ""
		if o, ok := obj.(metav1.Object); ok {
			name = o.GetName()
			if name == "" {
				return nil, fmt.Errorf("%s[%d] %s: no metadata.name", file, i, key)
			}
		}
		out = append(out, manifest{file: file, doc: i, kind: key, name: name, obj: obj})
	}
}

// k8sModel is every file under deploy/kubernetes, decoded, and what each
// kustomization directory builds.
type k8sModel struct {
	files map[string][]manifest // file → its documents
	dirs  map[string][]manifest // kustomization dir → the resources it builds
}

func loadKubernetes(t *testing.T) *k8sModel {
	t.Helper()
	m := &k8sModel{files: map[string][]manifest{}, dirs: map[string][]manifest{}}
	root := repoPath(filepath.FromSlash(k8sDir))
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		rel, _ := filepath.Rel(repoRoot, p)
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		docs, err := decodeStrict(rel, data)
		if err != nil {
			return err
		}
		m.files[rel] = docs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for file := range m.files {
		if path.Base(file) != "kustomization.yaml" {
			continue
		}
		dir := path.Dir(file)
		built, err := m.build(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.dirs[dir] = built
	}
	if len(m.dirs) == 0 {
		t.Fatalf("no kustomization.yaml under %s", k8sDir)
	}
	return m
}

// build lists the resources a kustomization directory produces, the way
// kustomize resolves plain resources: files and directories with their own
// kustomization, each at most once, no two objects with the same kind and name.
func (m *k8sModel) build(dir string, stack []string) ([]manifest, error) {
	if slices.Contains(stack, dir) {
		return nil, fmt.Errorf("kustomization cycle: %v", append(stack, dir))
	}
	docs := m.files[dir+"/kustomization.yaml"]
	if len(docs) != 1 {
		return nil, fmt.Errorf("%s/kustomization.yaml: want exactly one document, have %d", dir, len(docs))
	}
	k, ok := docs[0].obj.(*kustomization)
	if !ok {
		return nil, fmt.Errorf("%s/kustomization.yaml is a %s, not a Kustomization", dir, docs[0].kind)
	}
	if len(k.Resources) == 0 {
		return nil, fmt.Errorf("%s/kustomization.yaml lists no resources", dir)
	}
	var out []manifest
	ids := map[string]string{}
	for _, r := range k.Resources {
		if path.IsAbs(r) || strings.Contains(r, "://") {
			return nil, fmt.Errorf("%s/kustomization.yaml: resource %q must be a relative path", dir, r)
		}
		target := path.Clean(path.Join(dir, r))
		if !strings.HasPrefix(target+"/", k8sDir+"/") {
			return nil, fmt.Errorf("%s/kustomization.yaml: resource %q leaves %s", dir, r, k8sDir)
		}
		var got []manifest
		if _, isKust := m.files[target+"/kustomization.yaml"]; isKust {
			sub, err := m.build(target, append(stack, dir))
			if err != nil {
				return nil, err
			}
			got = sub
		} else if docs, ok := m.files[target]; ok {
			got = docs
		} else {
			return nil, fmt.Errorf("%s/kustomization.yaml: resource %q: no such manifest or kustomization directory", dir, r)
		}
		for _, g := range got {
			id := g.kind + "/" + g.name
			if prev, dup := ids[id]; dup {
				return nil, fmt.Errorf("%s: %s comes twice (%s and %s)", dir, id, prev, g.file)
			}
			ids[id] = g.file
			out = append(out, g)
		}
	}
	return out, nil
}

// workload is a Deployment or Job with its pod template.
type workload struct {
	manifest
	pod *corev1.PodTemplateSpec
}

func workloads(ms []manifest) []workload {
	var out []workload
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{m, &o.Spec.Template})
		case *batchv1.Job:
			out = append(out, workload{m, &o.Spec.Template})
		}
	}
	return out
}

// proxyImageRepo is the image repository's last path element.
const proxyImageRepo = "dxtra-proxy"

// imageRepo strips the tag and digest from an image reference.
func imageRepo(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

func isProxyImage(image string) bool { return path.Base(imageRepo(image)) == proxyImageRepo }

// podProxy finds the pod's one dxtra-proxy container.
type podProxy struct {
	c      *corev1.Container
	native bool // an init container (restartPolicy checked separately)
	index  int
}

func findProxy(t *testing.T, w workload) podProxy {
	t.Helper()
	var found []podProxy
	for i := range w.pod.Spec.InitContainers {
		if c := &w.pod.Spec.InitContainers[i]; isProxyImage(c.Image) {
			found = append(found, podProxy{c, true, i})
		}
	}
	for i := range w.pod.Spec.Containers {
		if c := &w.pod.Spec.Containers[i]; isProxyImage(c.Image) {
			found = append(found, podProxy{c, false, i})
		}
	}
	if len(found) != 1 {
		t.Fatalf("%v: want exactly one %s container, have %d", w.manifest, proxyImageRepo, len(found))
	}
	return found[0]
}

// literalEnv returns the container's DXTRA_* settings; every one must be a
// literal value so the test (and a reader) can tell what the proxy runs with.
func literalEnv(t *testing.T, ctx string, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "DXTRA_") {
			continue
		}
		if e.ValueFrom != nil {
			t.Errorf("%s: %s comes from valueFrom; set DXTRA_* variables as literal values (the PAT as DXTRA_PAT_FILE)", ctx, e.Name)
			continue
		}
		if _, dup := env[e.Name]; dup {
			t.Errorf("%s: %s is set twice", ctx, e.Name)
		}
		env[e.Name] = e.Value
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("%s: envFrom hides which DXTRA_* variables are set; list them in env", ctx)
	}
	return env
}

// commandLine joins a container's command and args for text checks.
func commandLine(c *corev1.Container) string {
	return strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
}

// allContainers lists init and regular containers.
func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range spec.InitContainers {
		out = append(out, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		out = append(out, &spec.Containers[i])
	}
	return out
}

func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	m := loadKubernetes(t)
	// Every manifest is part of some kustomization, except *.example.yaml
	// (the Secret, which `kubectl apply -k` must never overwrite).
	used := map[string]bool{}
	for _, built := range m.dirs {
		for _, r := range built {
			used[r.file] = true
		}
	}
	for file, docs := range m.files {
		base := path.Base(file)
		switch {
		case base == "kustomization.yaml":
		case strings.HasSuffix(base, ".example.yaml"):
			for _, d := range docs {
				if d.kind != "v1/Secret" {
					t.Errorf("%v: only the example Secret stays out of the kustomizations", d)
				}
			}
		case !used[file]:
			t.Errorf("%s is in no kustomization.yaml", file)
		}
		if len(docs) == 0 {
			t.Errorf("%s has no document", file)
		}
	}
	var secrets []*corev1.Secret
	for _, built := range m.dirs {
		for _, r := range built {
			if s, ok := r.obj.(*corev1.Secret); ok {
				secrets = append(secrets, s)
			}
		}
	}
	if len(secrets) > 0 {
		t.Errorf("a kustomization builds Secret %q: `kubectl apply -k` would overwrite the user's PAT", secrets[0].Name)
	}
}

// exampleSecret is the Secret the examples expect (common/secret.example.yaml).
func exampleSecret(t *testing.T, m *k8sModel) *corev1.Secret {
	t.Helper()
	var found []*corev1.Secret
	for _, docs := range m.files {
		for _, d := range docs {
			if s, ok := d.obj.(*corev1.Secret); ok {
				found = append(found, s)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one example Secret under %s, have %d", k8sDir, len(found))
	}
	return found[0]
}

func TestKubernetesWorkloads(t *testing.T) {
	f := program(t)
	m := loadKubernetes(t)
	secret := exampleSecret(t, m)
	var images []string
	var native, classic, jobNative, jobQuit int
	seen := map[string]bool{}
	for dir, built := range m.dirs {
		for _, w := range workloads(built) {
			id := w.file + "/" + w.name
			if seen[id] {
				continue
			}
			seen[id] = true
			t.Run(id, func(t *testing.T) {
				p := findProxy(t, w)
				images = append(images, p.c.Image)
				kind := checkWorkload(t, f, w, p, secret)
				switch kind {
				case "native":
					native++
				case "classic":
					classic++
				case "job-native":
					jobNative++
				case "job-quit":
					jobQuit++
				}
				checkEgressPolicy(t, dir, built, w)
			})
		}
	}
	for _, c := range []struct {
		what string
		n    int
	}{
		{"Deployment with a native sidecar", native},
		{"Deployment with a classic sidecar", classic},
		{"Job with a native sidecar", jobNative},
		{"Job that ends its sidecar with /quitquitquit", jobQuit},
	} {
		if c.n == 0 {
			t.Errorf("no %s under %s", c.what, k8sDir)
		}
	}
	slices.Sort(images)
	if images = slices.Compact(images); len(images) > 1 {
		t.Errorf("the examples use different proxy images: %v", images)
	}
}

// checkWorkload checks one pod template and says which of the four example
// shapes it is.
func checkWorkload(t *testing.T, f *programFacts, w workload, p podProxy, secret *corev1.Secret) string {
	t.Helper()
	ctx := w.manifest.String()
	spec := &w.pod.Spec
	env := literalEnv(t, ctx, p.c)

	// Listeners: the proxy port on loopback only; the admin port where the
	// kubelet and Prometheus can reach it, unless /quitquitquit is on.
	listen := parseListenAddr(t, "DXTRA_LISTEN_ADDR", f.effective(t, env, "DXTRA_LISTEN_ADDR"))
	admin := parseListenAddr(t, "DXTRA_ADMIN_ADDR", f.effective(t, env, "DXTRA_ADMIN_ADDR"))
	if !listen.loopback() {
		t.Errorf("%s: DXTRA_LISTEN_ADDR %s:%d is not loopback: only the Pod's own containers may use the proxy", ctx, listen.host, listen.port)
	}
	quit := f.effective(t, env, "DXTRA_ENABLE_QUIT") == "true"
	if quit && !admin.loopback() {
		t.Errorf("%s: DXTRA_ENABLE_QUIT=true with DXTRA_ADMIN_ADDR on %q: anything reaching the Pod IP could stop the proxy", ctx, admin.host)
	}

	// Shutdown fits in the grace period.
	delay := parseDuration(t, "DXTRA_SHUTDOWN_DELAY", f.effective(t, env, "DXTRA_SHUTDOWN_DELAY"))
	timeout := parseDuration(t, "DXTRA_SHUTDOWN_TIMEOUT", f.effective(t, env, "DXTRA_SHUTDOWN_TIMEOUT"))
	grace := defaultGrace
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	if need := delay + timeout + graceMargin; grace < need {
		t.Errorf("%s: terminationGracePeriodSeconds %v < DXTRA_SHUTDOWN_DELAY %v + DXTRA_SHUTDOWN_TIMEOUT %v + margin %v",
			ctx, grace, delay, timeout, graceMargin)
	}

	checkPodSecurity(t, ctx, spec)
	checkPATFile(t, ctx, w, p.c, env, secret)
	checkResources(t, ctx, spec, p.c)

	// The proxy's probes, each on the admin listener.
	probes := []struct {
		name, path string
		probe      *corev1.Probe
	}{
		{"startupProbe", "/readyz", p.c.StartupProbe},
		{"readinessProbe", "/readyz", p.c.ReadinessProbe},
		{"livenessProbe", "/healthz", p.c.LivenessProbe},
	}
	for _, pr := range probes {
		if pr.probe != nil {
			checkHTTPProbe(t, ctx+" "+pr.name, pr.probe, pr.path, p.c, admin)
		}
	}
	checkScrapeHint(t, ctx, w, p.c, admin)

	// The app calls the proxy on loopback.
	call := fmt.Sprintf("http://127.0.0.1:%d/v1/graphql", listen.port)
	calls := false
	for _, c := range allContainers(spec) {
		if c != p.c && strings.Contains(commandLine(c), call) {
			calls = true
		}
	}
	if !calls {
		t.Errorf("%s: no app container calls %s", ctx, call)
	}

	_, isJob := w.obj.(*batchv1.Job)
	if isJob && spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("%s: a Job's pod needs restartPolicy Never or OnFailure, have %q", ctx, spec.RestartPolicy)
	}
	switch {
	case p.native:
		if p.c.RestartPolicy == nil || *p.c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s: init container %s needs restartPolicy: Always to be a native sidecar", ctx, p.c.Name)
		}
		if p.index != 0 {
			t.Errorf("%s: the proxy is init container #%d; make it the first so everything after it can use it", ctx, p.index)
		}
		if p.c.StartupProbe == nil {
			t.Errorf("%s: a native sidecar needs a startupProbe on /readyz, so the app starts only once a token is held", ctx)
		}
		if quit {
			t.Errorf("%s: a native sidecar needs no DXTRA_ENABLE_QUIT", ctx)
		}
		if !isJob {
			requireProbes(t, ctx, p.c)
			return "native"
		}
		return "job-native"
	case isJob:
		// A classic sidecar in a Job never ends by itself: the task must stop it.
		if !quit {
			t.Errorf("%s: a Job with a classic sidecar needs DXTRA_ENABLE_QUIT=true and a POST to /quitquitquit", ctx)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/quitquitquit", admin.port)
		posts := false
		for _, c := range allContainers(spec) {
			line := commandLine(c)
			if c != p.c && strings.Contains(line, url) && strings.Contains(line, "POST") {
				posts = true
			}
		}
		if !posts {
			t.Errorf("%s: no container POSTs to %s", ctx, url)
		}
		return "job-quit"
	default:
		// Both containers get SIGTERM at once: the proxy must outlive the app's last calls.
		if delay <= 0 {
			t.Errorf("%s: a classic sidecar needs DXTRA_SHUTDOWN_DELAY > 0 so the app's last calls still pass", ctx)
		}
		if quit {
			t.Errorf("%s: a long-running Deployment needs no DXTRA_ENABLE_QUIT", ctx)
		}
		requireProbes(t, ctx, p.c)
		return "classic"
	}
}

// requireProbes insists on readiness and liveness for a long-running proxy.
func requireProbes(t *testing.T, ctx string, c *corev1.Container) {
	t.Helper()
	if c.ReadinessProbe == nil {
		t.Errorf("%s: the proxy needs a readinessProbe on /readyz", ctx)
	}
	if c.LivenessProbe == nil {
		t.Errorf("%s: the proxy needs a livenessProbe on /healthz", ctx)
	}
}

// resolvePort turns a probe's named or numbered port into a number.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int, bool) {
	if p.Type == intstr.Int {
		return p.IntValue(), true
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), true
		}
	}
	return 0, false
}

// declaresPort reports whether the container lists the port.
func declaresPort(c *corev1.Container, port int) bool {
	for _, cp := range c.Ports {
		if int(cp.ContainerPort) == port {
			return true
		}
	}
	return false
}

func checkHTTPProbe(t *testing.T, ctx string, pr *corev1.Probe, wantPath string, c *corev1.Container, admin listenAddr) {
	t.Helper()
	g := pr.HTTPGet
	if g == nil {
		t.Errorf("%s: want an httpGet probe on %s", ctx, wantPath)
		return
	}
	if g.Path != wantPath {
		t.Errorf("%s: path %q; want %q", ctx, g.Path, wantPath)
	}
	if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
		t.Errorf("%s: scheme %q; the admin listener speaks plain HTTP", ctx, g.Scheme)
	}
	port, ok := resolvePort(c, g.Port)
	if !ok {
		t.Errorf("%s: port %q is not among the container's ports", ctx, g.Port.String())
	} else if port != admin.port {
		t.Errorf("%s: port %d; DXTRA_ADMIN_ADDR listens on %d", ctx, port, admin.port)
	}
	if !admin.wildcard() {
		t.Errorf("%s: DXTRA_ADMIN_ADDR host %q: the kubelet probes the Pod IP, so the admin listener must be on 0.0.0.0", ctx, admin.host)
	}
}

func checkScrapeHint(t *testing.T, ctx string, w workload, c *corev1.Container, admin listenAddr) {
	t.Helper()
	a := w.pod.Annotations
	_, isDeployment := w.obj.(*appsv1.Deployment)
	if a["prometheus.io/scrape"] != "true" {
		if isDeployment {
			t.Errorf("%s: no Prometheus scrape hint (prometheus.io/scrape: \"true\")", ctx)
		}
		return
	}
	if got, want := a["prometheus.io/port"], fmt.Sprint(admin.port); got != want {
		t.Errorf("%s: prometheus.io/port %q; DXTRA_ADMIN_ADDR listens on %s", ctx, got, want)
	}
	if got := a["prometheus.io/path"]; got != "/metrics" {
		t.Errorf("%s: prometheus.io/path %q; want /metrics", ctx, got)
	}
	if !admin.wildcard() {
		t.Errorf("%s: a scrape hint with DXTRA_ADMIN_ADDR on %q: Prometheus cannot reach it", ctx, admin.host)
	}
	if !declaresPort(c, admin.port) {
		t.Errorf("%s: the proxy container does not declare the admin port %d", ctx, admin.port)
	}
}

// checkPodSecurity: the restricted Pod Security Standard and then some, on the
// pod and on every container.
func checkPodSecurity(t *testing.T, ctx string, spec *corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil {
		t.Errorf("%s: no pod securityContext", ctx)
		psc = &corev1.PodSecurityContext{}
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: pod securityContext.runAsNonRoot is not true", ctx)
	}
	if psc.RunAsUser == nil || *psc.RunAsUser != nonRootUID {
		t.Errorf("%s: pod securityContext.runAsUser is not %d", ctx, nonRootUID)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext.seccompProfile is not RuntimeDefault", ctx)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: shares a host namespace", ctx)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false (nothing here talks to the Kubernetes API)", ctx)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: volume %s is a hostPath", ctx, v.Name)
		}
	}
	for _, c := range allContainers(spec) {
		cctx := ctx + " container " + c.Name
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s: no securityContext", cctx)
			continue
		}
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: runAsNonRoot is not true", cctx)
		}
		if sc.RunAsUser == nil || *sc.RunAsUser != nonRootUID {
			t.Errorf("%s: runAsUser is not %d", cctx, nonRootUID)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", cctx)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", cctx)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", cctx)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: capabilities.drop lacks ALL", cctx)
		} else if len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: adds capabilities %v", cctx, sc.Capabilities.Add)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: seccompProfile is not RuntimeDefault", cctx)
		}
	}
}

// checkPATFile: the PAT is a file from the Secret the README creates, which
// the proxy's user can read; it is never in the manifest.
func checkPATFile(t *testing.T, ctx string, w workload, c *corev1.Container, env map[string]string, secret *corev1.Secret) {
	t.Helper()
	if _, ok := env["DXTRA_PAT"]; ok {
		t.Errorf("%s: DXTRA_PAT in a manifest; mount the Secret and set DXTRA_PAT_FILE", ctx)
	}
	file, ok := env["DXTRA_PAT_FILE"]
	if !ok {
		t.Errorf("%s: no DXTRA_PAT_FILE", ctx)
		return
	}
	dir, key := path.Split(file)
	dir = strings.TrimSuffix(dir, "/")
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == dir {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Errorf("%s: DXTRA_PAT_FILE %s: nothing is mounted at %s", ctx, file, dir)
		return
	}
	if !mount.ReadOnly {
		t.Errorf("%s: the PAT volume is mounted read-write", ctx)
	}
	var vol *corev1.Volume
	for i := range w.pod.Spec.Volumes {
		if w.pod.Spec.Volumes[i].Name == mount.Name {
			vol = &w.pod.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil {
		t.Errorf("%s: the volume at %s is not a Secret", ctx, dir)
		return
	}
	if vol.Secret.SecretName != secret.Name {
		t.Errorf("%s: mounts Secret %q; the example Secret (and the README) is %q", ctx, vol.Secret.SecretName, secret.Name)
	}
	if len(vol.Secret.Items) > 0 {
		t.Errorf("%s: Secret items remap keys; mount the whole Secret so the file is the key %q", ctx, key)
	}
	if _, ok := secret.StringData[key]; !ok {
		if _, ok := secret.Data[key]; !ok {
			t.Errorf("%s: DXTRA_PAT_FILE reads key %q, which the example Secret %q does not have", ctx, key, secret.Name)
		}
	}
	// Files in a Secret volume belong to root, group fsGroup.
	mode := int32(0o644)
	if vol.Secret.DefaultMode != nil {
		mode = *vol.Secret.DefaultMode
	}
	psc := w.pod.Spec.SecurityContext
	groupReads := mode&0o040 != 0 && psc != nil && psc.FSGroup != nil && *psc.FSGroup == nonRootUID
	if mode&0o004 == 0 && !groupReads {
		fsGroup := "unset"
		if psc != nil && psc.FSGroup != nil {
			fsGroup = fmt.Sprint(*psc.FSGroup)
		}
		t.Errorf("%s: Secret file mode %#o with fsGroup %s: user %d cannot read the PAT", ctx, mode, fsGroup, nonRootUID)
	}
	if mode&0o002 != 0 || mode&0o111 != 0 {
		t.Errorf("%s: Secret file mode %#o is writable or executable", ctx, mode)
	}
}

// checkResources: the proxy has requests and limits; every container has
// requests and a memory limit.
func checkResources(t *testing.T, ctx string, spec *corev1.PodSpec, proxy *corev1.Container) {
	t.Helper()
	for _, c := range allContainers(spec) {
		r := c.Resources
		want := []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory}
		for _, name := range want {
			if _, ok := r.Requests[name]; !ok {
				t.Errorf("%s container %s: no %s request", ctx, c.Name, name)
			}
		}
		limits := []corev1.ResourceName{corev1.ResourceMemory}
		if c == proxy {
			limits = want
		}
		for _, name := range limits {
			lim, ok := r.Limits[name]
			if !ok {
				t.Errorf("%s container %s: no %s limit", ctx, c.Name, name)
				continue
			}
			if req, ok := r.Requests[name]; ok && req.Cmp(lim) > 0 {
				t.Errorf("%s container %s: %s request %s above its limit %s", ctx, c.Name, name, req.String(), lim.String())
			}
		}
	}
	if lim, ok := proxy.Resources.Limits[corev1.ResourceMemory]; ok && lim.Cmp(resource.MustParse("16Mi")) < 0 {
		t.Errorf("%s: proxy memory limit %s is below what a Go HTTP proxy needs", ctx, lim.String())
	}
}

// egressPort is a protocol/port pair.
type egressPort struct {
	proto corev1.Protocol
	port  int
}

var wantEgress = []egressPort{{corev1.ProtocolUDP, 53}, {corev1.ProtocolTCP, 53}, {corev1.ProtocolTCP, 443}}

// checkEgressPolicy: the kustomization that deploys the workload also applies a
// NetworkPolicy selecting its pod that allows egress to DNS and HTTPS only.
func checkEgressPolicy(t *testing.T, dir string, built []manifest, w workload) {
	t.Helper()
	selected := 0
	for _, r := range built {
		np, ok := r.obj.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Errorf("%v: podSelector: %v", r, err)
			continue
		}
		if sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
			continue
		}
		selected++
		checkEgressOnly(t, r.String(), np)
	}
	if selected == 0 {
		t.Errorf("%s: no NetworkPolicy in %s selects the pod (labels %v)", w.manifest, dir, w.pod.Labels)
	}
}

func checkEgressOnly(t *testing.T, ctx string, np *networkingv1.NetworkPolicy) {
	t.Helper()
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("%s: policyTypes lacks Egress, so egress is not restricted", ctx)
	}
	have := map[egressPort]bool{}
	for i, rule := range np.Spec.Egress {
		if len(rule.Ports) == 0 {
			t.Errorf("%s: egress rule %d allows every port", ctx, i)
		}
		for _, p := range rule.Ports {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if p.Port == nil || p.Port.Type != intstr.Int || p.EndPort != nil {
				t.Errorf("%s: egress rule %d: want one numbered port, have %v", ctx, i, p.Port)
				continue
			}
			ep := egressPort{proto, p.Port.IntValue()}
			if !slices.Contains(wantEgress, ep) {
				t.Errorf("%s: egress rule %d allows %s/%d; only DNS (53) and HTTPS (443) may leave the Pod", ctx, i, ep.proto, ep.port)
			}
			have[ep] = true
		}
	}
	for _, ep := range wantEgress {
		if !have[ep] {
			t.Errorf("%s: egress to %s/%d is not allowed; the proxy needs it", ctx, ep.proto, ep.port)
		}
	}
}

// TestDeployNamesKnown: every DXTRA_* name in any deployment file is one the
// program knows (a misspelt variable is silently ignored at run time).
func TestDeployNamesKnown(t *testing.T) {
	f := program(t)
	m := loadKubernetes(t)
	files := slices.Sorted(mapsKeys(m.files))
	files = append(files, composeFile, composeExample, "Dockerfile")
	for _, file := range files {
		checkNamesKnown(t, f, file, readRepoFile(t, file))
	}
}

func TestKubernetesSelectors(t *testing.T) {
	m := loadKubernetes(t)
	for _, docs := range m.files {
		for _, d := range docs {
			dep, ok := d.obj.(*appsv1.Deployment)
			if !ok {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
				t.Errorf("%v: spec.selector does not select its own pod template (%v)", d, err)
			}
		}
	}
}

func TestDecodeStrictRejects(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 1}\n", "unknown field"},
		{"duplicate field", "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ntype: Opaque\ntype: Opaque\n", "already set"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "no Go type"},
		{"wrong type", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec: {backoffLimit: many}\n", "backoffLimit"},
		{"no name", "apiVersion: v1\nkind: Secret\ntype: Opaque\n", "metadata.name"},
		{"kustomization field", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [a.yaml]\n", "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStrict("x.yaml", []byte("# lead\n---\n"+tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decodeStrict() error = %v; want one mentioning %q", err, tc.want)
			}
		})
	}
	ms, err := decodeStrict("x.yaml", []byte("---\n# only a comment\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n"))
	if err != nil || len(ms) != 2 || ms[0].name != "a" || ms[1].name != "b" {
		t.Errorf("decodeStrict(two Secrets) = %v, %v; want a and b", ms, err)
	}
}
