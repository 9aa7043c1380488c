package controllers

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/cluster-api/util/conditions"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/host/fakehost"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
)

// blockingHosts is the fake host service whose Facts waits until release is closed, like a host that answers slowly.
type blockingHosts struct {
	*fakehost.Service
	release chan struct{}
}

func (b *blockingHosts) Facts(ctx context.Context, cfg sshrunner.Config) (*host.Facts, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.Service.Facts(ctx, cfg)
}

// TestProbeRunsOffTheWorkers: the pool probe ran its SSH work (scan, login, facts) inside Reconcile, holding a
// worker for up to 30 s per slow host, so a few hosts that never answer stalled every entry. Now Reconcile only
// starts a task in the shared TaskRunner and returns at once; the task's end brings the entry back (EventsFor), and
// that Reconcile stores the result: first the pinned key (AcceptNew, before any login), then Reachable and the facts.
func TestProbeRunsOffTheWorkers(t *testing.T) {
	g := NewWithT(t)
	ctx := ctrl.LoggerInto(context.Background(), ctrl.Log)
	scheme := runtime.NewScheme()
	g.Expect(corev1.AddToScheme(scheme)).To(Succeed())
	g.Expect(infrav1.AddToScheme(scheme)).To(Succeed())

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	g.Expect(err).NotTo(HaveOccurred())
	block, err := ssh.MarshalPrivateKey(priv, "")
	g.Expect(err).NotTo(HaveOccurred())
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "key"}, Data: map[string][]byte{"value": pem.EncodeToMemory(block)}}
	entry := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "e1", UID: "uid-e1"}}
	entry.Spec.Pool = "p"
	entry.Spec.Machine.Address, entry.Spec.Machine.Port, entry.Spec.Machine.User = "10.0.0.1", 22, "root"
	entry.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(secret, entry).WithStatusSubresource(&infrav1.PooledRemoteMachine{}).Build()

	hosts := &blockingHosts{Service: fakehost.New(), release: make(chan struct{})}
	h := hosts.Add("10.0.0.1", 22, &fakehost.Host{Facts: host.Facts{Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}}})
	runner := tasks.NewWithLimits(tasks.Limits{Total: 2})
	r := &PooledRemoteMachineReconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(100), ProbeInterval: time.Hour, Hosts: hosts, Tasks: runner}
	finished := runner.EventsFor(&infrav1.PooledRemoteMachine{})
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(entry)}
	reconcile := func() *infrav1.PooledRemoteMachine {
		t.Helper()
		start := time.Now()
		_, err := r.Reconcile(ctx, req)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second), "Reconcile waited for SSH")
		got := &infrav1.PooledRemoteMachine{}
		g.Expect(c.Get(ctx, req.NamespacedName, got)).To(Succeed())
		return got
	}
	awaitTask := func() {
		t.Helper()
		select {
		case ev := <-finished:
			g.Expect(ev.Object.GetName()).To(Equal("e1"), "the finished task brings its entry back")
		case <-time.After(10 * time.Second):
			t.Fatal("the probe task never finished")
		}
	}

	// First contact: the scan runs in a task; its key is stored before any login.
	got := reconcile()
	g.Expect(got.Spec.Machine.HostKeys).To(BeEmpty())
	awaitTask()
	got = reconcile()
	g.Expect(got.Spec.Machine.HostKeys).To(Equal(h.Keys), "pinned on the entry")
	g.Expect(hosts.Calls()).To(HaveLen(1))
	g.Expect(hosts.Calls()[0].Op).To(Equal("scan"), "nothing but a scan before the key is stored")

	// The login waits on the host: Reconcile does not.
	g.Expect(runner.Running("uid-e1", tasks.Probe)).To(BeTrue())
	got = reconcile()
	g.Expect(conditions.Get(got, infrav1.ReachableCondition)).To(BeNil(), "no result yet")
	close(hosts.release)
	awaitTask()
	got = reconcile()
	g.Expect(conditions.IsTrue(got, infrav1.ReachableCondition)).To(BeTrue())
	g.Expect(got.Status.Capacity.Cpu().String()).To(Equal("8"))

	// A failing host is reported in Reachable, from the task's result.
	hosts.Update("10.0.0.1", 22, func(h *fakehost.Host) { h.Missing = "flock" })
	r.lastProbe.Delete(entry.UID)
	reconcile()
	awaitTask()
	got = reconcile()
	g.Expect(conditions.GetReason(got, infrav1.ReachableCondition)).To(Equal(infrav1.HostPrerequisitesMissingReason))
}
