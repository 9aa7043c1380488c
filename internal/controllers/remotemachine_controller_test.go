//go:build integration

package controllers_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/controllers"
	"github.com/capr-project/cluster-api-provider-remote/internal/host/sshhost"
	"github.com/capr-project/cluster-api-provider-remote/internal/manager"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// orphanGrace is the test manager's grace for a claim whose RemoteMachine is missing.
const orphanGrace = 2 * time.Second

var (
	env *testenv.Environment
	// dials records every connection the controller opens, so a test can drop them as a crashed manager would.
	dials = &dialRecorder{}
)

type dialRecorder struct {
	mu    sync.Mutex
	hosts []sshhost.Conn
}

func (d *dialRecorder) dial(ctx context.Context, cfg sshrunner.Config) (sshhost.Conn, error) {
	h, err := sshhost.DialSSH(ctx, cfg)
	if err == nil {
		d.mu.Lock()
		d.hosts = append(d.hosts, h)
		d.mu.Unlock()
	}
	return h, err
}

// dropAll closes every open connection without stopping the remote commands, like a manager that died.
func (d *dialRecorder) dropAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range d.hosts {
		_ = h.Close()
	}
	d.hosts = nil
}

// secrets are the private keys and bootstrap data the tests handed to CAPR; logs collects every log line.
var (
	secretsMu sync.Mutex
	secrets   []string
	logs      = &testenv.SyncBuffer{}
)

func remember(s string) {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	secrets = append(secrets, s)
}

// leakedSecrets returns the secrets (or any of their long lines) found in the logs.
func leakedSecrets() []string {
	text := logs.String()
	var leaked []string
	for _, s := range secrets {
		for _, line := range strings.Split(s, "\n") {
			line = strings.TrimSpace(line)
			if len(line) >= 24 && strings.Contains(text, line) {
				leaked = append(leaked, line)
			}
		}
	}
	return leaked
}

func TestMain(m *testing.M) {
	sshdtest.SuiteNeedsRoot("internal/controllers")
	code := testenv.Run(m, testenv.Options{LogTo: logs, Manager: managerOptions(false)}, &env)
	// A scan of the whole run's logs finds neither a private key nor bootstrap data.
	if leaked := leakedSecrets(); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d secret line(s) appear in the logs, e.g. %q\n", len(leaked), leaked[0])
		code = 1
	} else if code == 0 {
		fmt.Fprintf(os.Stderr, "Scanned %d bytes of logs for %d secrets: none found\n", len(logs.String()), len(secrets))
	}
	os.Exit(code)
}

// managerOptions are the installed manager's settings with the test's knobs: short timeouts, and hosts reached
// through dials. A second environment in the same process (a move's target) sets skipNames, as controller names
// must be unique per process.
func managerOptions(skipNames bool) *manager.Options {
	o := manager.DefaultOptions()
	o.RemoteMachineConcurrency = 4
	o.Tasks = tasks.Limits{Total: 4, PerNamespace: 2, Cleanup: 4}
	o.BootstrapTimeout = time.Minute
	// Long enough for one cleanup on a loaded machine (make test runs two packages at once on two cores).
	o.CleanupTimeout = 10 * time.Second
	o.RetryInterval, o.RetryMaxInterval = 500*time.Millisecond, 2*time.Second
	o.OrphanClaimGrace = orphanGrace
	// Only entries of the probe test point at real sshd hosts; the others' addresses must never be dialled.
	o.PoolProbeInterval = time.Second
	o.PoolProbeSelector = labels.SelectorFromSet(labels.Set{"capr-test-probe": "true"})
	o.Hosts = &sshhost.Service{Dial: dials.dial}
	o.SkipNameValidation = skipNames
	return &o
}

// fixture is a Cluster with provisioned infrastructure and a Machine waiting for a RemoteMachine.
type fixture struct {
	ns      string
	cluster *clusterv1.Cluster
	machine *clusterv1.Machine
}

func newFixture(t *testing.T, bootstrapData, format string) *fixture {
	t.Helper()
	return newFixtureWith(t, bootstrapData, format, nil)
}

// newFixtureWith runs before(namespace) before the Cluster exists (e.g. to store its kubeconfig Secret).
func newFixtureWith(t *testing.T, bootstrapData, format string, before func(ns string)) *fixture {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	f := &fixture{ns: env.NewNamespace(t)}
	if before != nil {
		before(f.ns)
	}
	f.cluster = &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "c1"}}
	f.cluster.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteCluster", Name: "c1"}
	g.Expect(env.Client.Create(ctx, f.cluster)).To(Succeed())
	f.cluster.Status.Initialization.InfrastructureProvisioned = ptr.To(true)
	g.Expect(env.Client.Status().Update(ctx, f.cluster)).To(Succeed())

	remember(bootstrapData)
	g.Expect(env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "m0-bootstrap"},
		Data:       map[string][]byte{"value": []byte(bootstrapData), "format": []byte(format)},
	})).To(Succeed())
	f.machine = &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "m0", Labels: map[string]string{clusterv1.ClusterNameLabel: "c1"}}}
	f.machine.Spec.ClusterName = "c1"
	f.machine.Spec.Bootstrap.DataSecretName = ptr.To("m0-bootstrap")
	f.machine.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteMachine", Name: "m0"}
	g.Expect(env.Client.Create(ctx, f.machine)).To(Succeed())
	return f
}

// keySecret stores a host's client key as the seed's sshKeyRef Secret.
func (f *fixture) keySecret(t *testing.T, name string, h *sshdtest.Host) {
	t.Helper()
	remember(string(h.ClientKeyPEM))
	NewWithT(t).Expect(env.Client.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Data:       map[string][]byte{"value": h.ClientKeyPEM},
	})).To(Succeed())
}

// remoteMachine returns a RemoteMachine owned by the fixture's Machine.
func (f *fixture) remoteMachine() *infrav1.RemoteMachine {
	rm := &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "m0", Labels: map[string]string{clusterv1.ClusterNameLabel: "c1"}}}
	rm.OwnerReferences = []metav1.OwnerReference{{APIVersion: clusterv1.GroupVersion.String(), Kind: "Machine", Name: f.machine.Name, UID: f.machine.UID}}
	return rm
}

// hostEntry returns a pool entry of pool "default" for an sshd host, logging in with the key Secret and cleaning
// with the given command.
func (f *fixture) hostEntry(name string, h *sshdtest.Host, key, cleanup string) *infrav1.PooledRemoteMachine {
	entry := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name}}
	entry.Spec.Pool = "default"
	entry.Spec.Machine.Address, entry.Spec.Machine.Port = h.Address, int32(h.Port)
	entry.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: key}
	entry.Spec.Machine.CustomCleanUpCommands = []string{cleanup}
	return entry
}

// provisionedPooledMachine bootstraps, on a real sshd host, a RemoteMachine taking its host from pool entry
// entryName (key Secret "key", the given cleanup command; mutate may change the entry before it is stored).
func provisionedPooledMachine(t *testing.T, bootstrapData, entryName, cleanup string, mutate func(*infrav1.PooledRemoteMachine)) (*fixture, *sshdtest.Host, *infrav1.PooledRemoteMachine, *infrav1.RemoteMachine) {
	t.Helper()
	g := NewWithT(t)
	h := sshdtest.Start(t)
	f := newFixture(t, bootstrapData, "")
	f.keySecret(t, "key", h)
	entry := f.hostEntry(entryName, h, "key", cleanup)
	if mutate != nil {
		mutate(entry)
	}
	env.CreateEntryAndWait(g, entry)
	rm := f.remoteMachine()
	rm.Spec.Pool = "default"
	g.Expect(env.Client.Create(context.Background(), rm)).To(Succeed())
	waitProvisioned(g, rm)
	return f, h, entry, rm
}

// waitProvisioned waits until the RemoteMachine's bootstrap succeeded.
func waitProvisioned(g Gomega, rm *infrav1.RemoteMachine) {
	g.Eventually(func(g Gomega) {
		g.Expect(ptr.Deref(get(g, rm).Status.Initialization.Provisioned, false)).To(BeTrue())
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
}

// waitGone waits until the object is deleted (its finalizer removed).
func waitGone(g Gomega, obj client.Object) {
	g.Eventually(func() bool {
		return apierrors.IsNotFound(env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)))
	}, 30*time.Second, 200*time.Millisecond).Should(BeTrue())
}

func get(g Gomega, rm *infrav1.RemoteMachine) *infrav1.RemoteMachine {
	out := &infrav1.RemoteMachine{}
	g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(rm), out)).To(Succeed())
	return out
}

func condition(rm *infrav1.RemoteMachine, t string) metav1.Condition {
	if c := conditions.Get(rm, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

const kubeadmStyle = `## template: jinja
#cloud-config
write_files:
- path: /etc/capr-test/config.yaml
  owner: nobody:nogroup
  permissions: '0640'
  content: |
    nodeName: {{ ds.meta_data.local_hostname }}
- path: /etc/capr-test/script.sh
  permissions: '0755'
  encoding: b64
  content: ZWNobyBoZWxsbwo=
runcmd:
- echo one >> /run/capr-order
- [sh, -c, "echo two >> /run/capr-order"]
- 'echo three >> /run/capr-order && echo success > /run/cluster-api/bootstrap-success.complete'
`

// TestDirectMachineBootstrapsAndCleansUp is the reference document's direct RemoteMachine on a real sshd.
func TestDirectMachineBootstrapsAndCleansUp(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, kubeadmStyle, "cloud-config")
	f.keySecret(t, "footloose-key", h)

	rm := f.remoteMachine()
	rm.Spec.Address, rm.Spec.Port, rm.Spec.User = h.Address, int32(h.Port), "root"
	rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "footloose-key"}
	rm.Spec.CustomCleanUpCommands = []string{"echo cleaned > /run/capr-cleaned"}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

	g.Eventually(func(g Gomega) {
		got := get(g, rm)
		g.Expect(condition(got, infrav1.BootstrapSucceededCondition).Status).To(Equal(metav1.ConditionTrue), "%+v", got.Status.Conditions)
		g.Expect(got.Spec.ProviderID).NotTo(BeEmpty())
		g.Expect(got.Status.Initialization.Provisioned).To(Equal(ptr.To(true)))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	got := get(g, rm)
	g.Expect(got.Spec.ProviderID).To(Equal(fmt.Sprintf("remote-machine://%s:%d", h.Address, h.Port)))
	g.Expect(got.Status.Initialization.Provisioned).To(Equal(ptr.To(true)))
	g.Expect(got.Status.Ready).To(BeTrue())
	g.Expect(got.Status.Addresses).To(ContainElement(clusterv1.MachineAddress{Type: clusterv1.MachineInternalIP, Address: h.Address}))
	g.Expect(got.Spec.HostKeys).To(Equal([]string{h.HostKey}), "AcceptNew pinned the host's key")
	g.Expect(condition(got, infrav1.ReadyCondition).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(got.Finalizers).To(ContainElement(infrav1.RemoteMachineFinalizer))
	g.Expect(got.Annotations).To(HaveKeyWithValue(infrav1.BootstrapUIDAnnotation, string(got.UID)), "the host's marker names this RemoteMachine")
	g.Expect(condition(got, infrav1.BootstrapSucceededCondition).Message).To(Equal("Bootstrap succeeded on "+fmt.Sprintf("%s:%d", h.Address, h.Port)), "not mistaken for a moved copy")

	hostname, _ := h.Exec("hostname -s")
	identity := got.Namespace + "/" + got.Name + "/" + string(got.UID) // the marker binds namespace, name and UID
	// /tmp is the machine's, shared by every host and every test package running: only this machine's script counts.
	out, err := h.Exec("stat -c '%a %U:%G' /etc/capr-test/config.yaml /etc/capr-test/script.sh; cat /etc/capr-test/config.yaml /etc/capr-test/script.sh /run/capr-order; cat /run/cluster-api/bootstrap-success.complete /var/lib/capr/bootstrap.uid /var/lib/capr/bootstrap.done; ls -a /tmp | grep capr-bootstrap-" + string(got.UID) + " || true")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(Equal("640 nobody:nogroup\n755 root:root\nnodeName: " + hostname + "echo hello\none\ntwo\nthree\nsuccess\n" + identity + "\n" + identity + "\n"))

	g.Expect(env.Client.Delete(ctx, got)).To(Succeed())
	waitGone(g, rm)
	out, _ = h.Exec("cat /run/capr-cleaned; ls /run/cluster-api /var/lib/capr; cat /var/lib/capr/cleaned")
	g.Expect(out).To(Equal("cleaned\n/run/cluster-api:\ncapr-bootstrap.lock\n\n/var/lib/capr:\ncleaned\n"+identity+"\n"),
		"cleanup ran, removed the sentinel and CAPR's files, kept the lock file and recorded the machine as cleaned")
}

// TestPooledMachineBootstrapsAndIsReleased takes the host from a pool, pins its key on the entry, and returns it.
func TestPooledMachineBootstrapsAndIsReleased(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t, sshdtest.User{Name: "capr", Sudo: true})
	f := newFixture(t, "#!/bin/sh\nid -u > /run/capr-uid\n", "")
	f.keySecret(t, "pool-key", h)
	entry := f.hostEntry("host-a", h, "pool-key", "rm -f /run/capr-uid")
	entry.Spec.FailureDomain = "rack-1"
	entry.Spec.Machine.User, entry.Spec.Machine.UseSudo = "capr", true
	env.CreateEntryAndWait(g, entry)

	rm := f.remoteMachine()
	rm.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	g.Expect(rm.Spec.Address).To(Equal(h.Address))

	waitProvisioned(g, rm)
	g.Expect(get(g, rm).Status.FailureDomain).To(Equal("rack-1"))
	out, _ := h.Exec("cat /run/capr-uid")
	g.Expect(out).To(Equal("0\n"), "ran as root through sudo")
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.Machine.HostKeys).To(Equal([]string{h.HostKey}), "the key seen first is pinned on the entry too")

	g.Expect(env.Client.Delete(ctx, rm)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Spec.ClaimRef).To(BeNil())
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(entry.Spec.Quarantine).To(BeNil())
	out, _ = h.Exec("ls /run/capr-uid 2>&1 || true")
	g.Expect(out).To(ContainSubstring("No such file"))
}

// TestFailureReasons shows each failure as a condition with its reason.
func TestFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		name, data, format, reason, message string
		mutate                              func(*infrav1.RemoteMachine, *sshdtest.Host)
	}{
		{name: "host key mismatch", data: "#!/bin/sh\ntrue\n", reason: infrav1.HostKeyMismatchReason, message: "not among the 1 pinned key(s)",
			mutate: func(rm *infrav1.RemoteMachine, _ *sshdtest.Host) {
				rm.Spec.HostKeys = []string{testenv.HostKey}
			}},
		{name: "ignition disks", data: `{"ignition":{"version":"3.4.0"},"storage":{"disks":[{"device":"/dev/sdb","wipeTable":true}]}}`, format: "ignition",
			reason: infrav1.UnsupportedBootstrapFormatReason, message: "Ignition field storage.disks cannot be applied to a running host"},
		{name: "ignition remote source", data: `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"https://example.com/a"}}]}}`, format: "ignition",
			reason: infrav1.UnsupportedBootstrapFormatReason, message: "storage.files[0].contents.source"},
		{name: "unknown cloud-config key", data: "#cloud-config\npackages: [nginx]\n", reason: infrav1.UnsupportedBootstrapFormatReason, message: "key(s) packages are not supported"},
		{name: "missing key secret", data: "#!/bin/sh\ntrue\n", reason: infrav1.WaitingForSecretReason, message: "does not exist",
			mutate: func(rm *infrav1.RemoteMachine, _ *sshdtest.Host) { rm.Spec.SSHKeyRef.Name = "absent" }},
		{name: "failing command", data: "#cloud-config\nruncmd:\n- 'true'\n- 'echo broken >&2; exit 7'\n", reason: infrav1.BootstrapFailedReason, message: "step runcmd[1] failed; it is not run again"},
		{name: "unreachable", data: "#!/bin/sh\ntrue\n", reason: infrav1.HostUnreachableReason, message: "host unreachable",
			mutate: func(_ *infrav1.RemoteMachine, h *sshdtest.Host) { h.Stop() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			h := sshdtest.Start(t)
			f := newFixture(t, tc.data, tc.format)
			f.keySecret(t, "key", h)
			rm := f.remoteMachine()
			rm.Spec.Address, rm.Spec.Port = h.Address, int32(h.Port)
			rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
			if tc.mutate != nil {
				tc.mutate(rm, h)
			}
			g.Expect(env.Client.Create(context.Background(), rm)).To(Succeed())
			g.Eventually(func(g Gomega) {
				c := condition(get(g, rm), infrav1.BootstrapSucceededCondition)
				g.Expect(c.Reason).To(Equal(tc.reason), c.Message)
				g.Expect(c.Message).To(ContainSubstring(tc.message))
				g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
			got := get(g, rm)
			if tc.reason == infrav1.BootstrapFailedReason {
				g.Eventually(func(g Gomega) {
					g.Expect(get(g, rm).Status.FailureReason).To(Equal(ptr.To("CreateError")), "a failed run is terminal, for v1beta1 tools too")
				}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
			} else {
				g.Expect(got.Status.FailureReason).To(BeNil(), "only a failed run is a v1beta1 terminal failure")
			}
			g.Expect(condition(got, infrav1.ReadyCondition).Reason).To(Equal(tc.reason))
			// Deleting never hangs, whatever failed.
			g.Expect(env.Client.Delete(context.Background(), got)).To(Succeed())
			waitGone(g, rm)
		})
	}
}

// TestFailingCleanupQuarantines checks that a host whose cleanup keeps failing is quarantined, not returned dirty.
func TestFailingCleanupQuarantines(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f, _, entry, rm := provisionedPooledMachine(t, "#!/bin/sh\ntrue\n", "dirty", "echo cannot clean >&2; exit 1", nil)

	g.Expect(env.Client.Delete(ctx, rm)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Spec.Quarantine).NotTo(BeNil())
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(entry.Spec.Quarantine.Reason).To(Equal(infrav1.CleanupFailedReason))
	g.Expect(entry.Spec.Quarantine.Message).To(ContainSubstring("cannot clean"))
	g.Expect(entry.Spec.ClaimRef).To(BeNil())
	waitGone(g, rm)
	// The quarantined entry is never claimed again.
	next := testenv.NewPooledMachine(f.ns, "next", "default")
	g.Expect(env.Client.Create(ctx, next)).To(MatchError(ContainSubstring("1 quarantined")))
}

// TestBootstrapRunsExactlyOnceAcrossAManagerCrash drops every SSH connection during a long runcmd, as a manager that
// died would, and checks that the bootstrap ran exactly once and its result was adopted.
func TestBootstrapRunsExactlyOnceAcrossAManagerCrash(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#cloud-config\nruncmd:\n- echo run >> /run/capr-counter\n- touch /run/capr-started; sleep 3\n- echo finished\n", "")
	f.keySecret(t, "key", h)
	rm := f.remoteMachine()
	rm.Spec.Address, rm.Spec.Port = h.Address, int32(h.Port)
	rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

	g.Eventually(func() error {
		_, err := h.Exec("test -f /run/capr-started")
		return err
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	dials.dropAll()

	g.Eventually(func(g Gomega) {
		c := condition(get(g, rm), infrav1.BootstrapSucceededCondition)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), c.Message)
		g.Expect(c.Message).To(ContainSubstring("adopted"))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	out, _ := h.Exec("cat /run/capr-counter")
	g.Expect(strings.Count(out, "run")).To(Equal(1), "the bootstrap ran exactly once")
}

// workloadCluster starts a second kube-apiserver, as a workload cluster, and returns a client of it, an admin
// kubeconfig for it, and its stop function.
func workloadCluster(g Gomega) (client.Client, []byte, func()) {
	workload := &envtest.Environment{BinaryAssetsDirectory: testenv.BinDir()}
	wcfg, err := workload.Start()
	g.Expect(err).NotTo(HaveOccurred())
	user, err := workload.AddUser(envtest.User{Name: "workload-admin", Groups: []string{"system:masters"}}, nil)
	g.Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := user.KubeConfig()
	g.Expect(err).NotTo(HaveOccurred())
	wc, err := client.New(wcfg, client.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	return wc, kubeconfig, func() { _ = workload.Stop() }
}

// workloadKubeconfig stores the kubeconfig Secret of cluster c1 in ns, as Cluster API does.
func workloadKubeconfig(g Gomega, ns string, kubeconfig []byte) {
	g.Expect(env.Client.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c1-kubeconfig", Labels: map[string]string{clusterv1.ClusterNameLabel: "c1"}},
		Data:       map[string][]byte{"value": kubeconfig},
		Type:       clusterv1.ClusterSecretType,
	})).To(Succeed())
}

// TestNodeProviderIDIsSet bootstraps a host of a workload cluster (a second kube-apiserver) whose Node the kubelet
// registered without a providerID, reporting the host's machine-id, and checks that CAPR sets it through the
// kubeconfig Secret.
func TestNodeProviderIDIsSet(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	wc, kubeconfig, stop := workloadCluster(g)
	defer stop()

	h := sshdtest.Start(t)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}
	g.Expect(wc.Create(ctx, node)).To(Succeed())
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: h.Address}}
	node.Status.NodeInfo.MachineID = h.MachineID
	g.Expect(wc.Status().Update(ctx, node)).To(Succeed())
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-2"}}
	g.Expect(wc.Create(ctx, other)).To(Succeed())

	f := newFixtureWith(t, "#!/bin/sh\ntrue\n", "", func(ns string) { workloadKubeconfig(g, ns, kubeconfig) })
	f.keySecret(t, "key", h)
	rm := f.remoteMachine()
	rm.Spec.Address, rm.Spec.Port = h.Address, int32(h.Port)
	rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

	g.Eventually(func(g Gomega) {
		g.Expect(wc.Get(ctx, client.ObjectKeyFromObject(node), node)).To(Succeed())
		g.Expect(node.Spec.ProviderID).To(Equal(fmt.Sprintf("remote-machine://%s:%d", h.Address, h.Port)))
	}, 90*time.Second, 500*time.Millisecond).Should(Succeed())
	g.Expect(wc.Get(ctx, client.ObjectKeyFromObject(other), other)).To(Succeed())
	g.Expect(other.Spec.ProviderID).To(BeEmpty(), "only the host's own Node")
}

// TestWaitsPauseAndSkipCleanup checks the waiting reasons, the pause, and the annotation that skips cleanup.
func TestWaitsPauseAndSkipCleanup(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\ntouch /run/capr-ran\n", "")
	f.keySecret(t, "key", h)
	waitFor := func(rm *infrav1.RemoteMachine, reason string) {
		g.Eventually(func(g Gomega) {
			g.Expect(condition(get(g, rm), infrav1.BootstrapSucceededCondition).Reason).To(Equal(reason))
		}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	}

	// Without an owner Machine.
	orphan := f.remoteMachine()
	orphan.Name, orphan.OwnerReferences = "orphan", nil
	orphan.Spec.Address, orphan.Spec.Port, orphan.Spec.SSHKeyRef = h.Address, int32(h.Port), &infrav1.SecretReference{Name: "key"}
	g.Expect(env.Client.Create(ctx, orphan)).To(Succeed())
	waitFor(orphan, infrav1.WaitingForMachineReason)

	// Paused Cluster: Paused condition, nothing runs.
	f.cluster.Spec.Paused = ptr.To(true)
	g.Expect(env.Client.Update(ctx, f.cluster)).To(Succeed())
	rm := f.remoteMachine()
	rm.Spec.Address, rm.Spec.Port, rm.Spec.SSHKeyRef = h.Address, int32(h.Port), &infrav1.SecretReference{Name: "key"}
	rm.Annotations = map[string]string{controllers.SkipCleanupAnnotation: ""}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(condition(get(g, rm), infrav1.PausedCondition).Status).To(Equal(metav1.ConditionTrue))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	_, err := h.Exec("test -f /run/capr-ran")
	g.Expect(err).To(HaveOccurred(), "nothing ran while paused")

	// Without bootstrap data yet.
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(f.machine), f.machine)).To(Succeed())
	f.machine.Spec.Bootstrap.DataSecretName = nil
	f.machine.Spec.Bootstrap.ConfigRef = clusterv1.ContractVersionedObjectReference{APIGroup: "bootstrap.cluster.x-k8s.io", Kind: "KubeadmConfig", Name: "m0"}
	g.Expect(env.Client.Update(ctx, f.machine)).To(Succeed())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(f.cluster), f.cluster)).To(Succeed())
	f.cluster.Spec.Paused = nil
	g.Expect(env.Client.Update(ctx, f.cluster)).To(Succeed())
	waitFor(rm, infrav1.WaitingForBootstrapDataReason)

	// With it: bootstrap runs; with the skip annotation, deletion does not clean the host.
	f.machine.Spec.Bootstrap.DataSecretName = ptr.To("m0-bootstrap")
	g.Expect(env.Client.Update(ctx, f.machine)).To(Succeed())
	waitFor(rm, infrav1.BootstrapSucceededReason)
	g.Expect(env.Client.Delete(ctx, rm)).To(Succeed())
	waitGone(g, rm)
	out, _ := h.Exec("ls /run/cluster-api")
	g.Expect(out).To(ContainSubstring("bootstrap-success.complete"), "cleanup was skipped")
}

// TestSkipCleanupQuarantinesAPooledHost checks that the skip-cleanup annotation cannot return a pooled host dirty:
// the host is left as it is and its entry is quarantined (CleanupSkipped), not released.
func TestSkipCleanupQuarantinesAPooledHost(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f, h, entry, rm := provisionedPooledMachine(t, "#!/bin/sh\ntrue\n", "skipped", "echo cleaned > /run/capr-cleaned", nil)
	g.Expect(env.Client.Patch(ctx, rm, client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+controllers.SkipCleanupAnnotation+`":""}}}`)))).To(Succeed())
	g.Expect(env.Client.Delete(ctx, rm)).To(Succeed())
	waitGone(g, rm)
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Spec.Quarantine).NotTo(BeNil())
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(entry.Spec.Quarantine.Reason).To(Equal(infrav1.CleanupSkippedReason))
	g.Expect(entry.Spec.Quarantine.Message).To(ContainSubstring(controllers.SkipCleanupAnnotation))
	g.Expect(entry.Spec.ClaimRef).To(BeNil())
	out, _ := h.Exec("test -e /run/capr-cleaned && echo CLEANED; ls /run/cluster-api")
	g.Expect(out).NotTo(ContainSubstring("CLEANED"), "the cleanup was skipped")
	g.Expect(out).To(ContainSubstring("bootstrap-success.complete"))
	next := testenv.NewPooledMachine(f.ns, "next", "default")
	g.Expect(env.Client.Create(ctx, next)).To(MatchError(ContainSubstring("1 quarantined")))
}
