package controllers

import (
	"context"
	"strconv"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// TestWrittenVersionsHoldBackAStaleCache checks the record of the manager's writes: an object read at a version
// older than the last write (of the object or of its status, through the recording client) is behind; the version
// written, or a later one, is not, and a record is dropped once caught up or forgotten.
func TestWrittenVersionsHoldBackAStaleCache(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	scheme := runtime.NewScheme()
	g.Expect(infrav1.AddToScheme(scheme)).To(Succeed())
	base := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&infrav1.PooledRemoteMachine{}).Build()
	w := NewWrittenVersions(scheme, &infrav1.PooledRemoteMachine{})
	c := w.Client(base)

	entry := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "e"}, Spec: infrav1.PooledRemoteMachineSpec{Pool: "p"}}
	g.Expect(c.Create(ctx, entry)).To(Succeed())
	created := entry.DeepCopy()
	g.Expect(w.Behind(created)).To(BeFalse(), "the version just written")

	orig := entry.DeepCopy()
	entry.Status.Phase = infrav1.PooledRemoteMachinePhaseAvailable
	g.Expect(c.Status().Patch(ctx, entry, client.MergeFrom(orig))).To(Succeed())
	g.Expect(w.Behind(created)).To(BeTrue(), "a cache still at the create is behind the status write")
	g.Expect(w.Behind(created)).To(BeTrue(), "and stays behind until it catches up")

	later := entry.DeepCopy()
	n, err := strconv.Atoi(later.ResourceVersion)
	g.Expect(err).NotTo(HaveOccurred())
	later.ResourceVersion = strconv.Itoa(n + 5)
	g.Expect(w.Behind(later)).To(BeFalse(), "a later version (someone else's write) is not behind")
	g.Expect(w.Behind(created)).To(BeFalse(), "the record was dropped once caught up")

	dry := entry.DeepCopy()
	dry.Labels = map[string]string{"dry": "run"}
	g.Expect(c.Patch(ctx, dry, client.MergeFrom(entry), client.DryRunAll)).To(Succeed())
	g.Expect(w.Behind(created)).To(BeFalse(), "a dry run is not recorded")
	orig = entry.DeepCopy()
	entry.Labels = map[string]string{"rack": "r1"}
	g.Expect(c.Patch(ctx, entry, client.MergeFrom(orig))).To(Succeed())
	g.Expect(w.Behind(created)).To(BeTrue(), "a metadata write is recorded too")
	w.Forget(&infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "e"}})
	g.Expect(w.Behind(created)).To(BeFalse(), "forgotten")

	other := &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "e"}}
	g.Expect(c.Create(ctx, other)).To(Succeed())
	stale := other.DeepCopy()
	stale.ResourceVersion = "1"
	g.Expect(w.Behind(stale)).To(BeFalse(), "a kind not asked for is not recorded")
	g.Expect(w.versions).To(BeEmpty(), "nothing kept for it either")
	var none *WrittenVersions
	g.Expect(none.Behind(created)).To(BeFalse(), "no record holds nothing back")
	notNumeric := created.DeepCopy()
	notNumeric.ResourceVersion = "abc"
	g.Expect(c.Patch(ctx, entry, client.MergeFrom(entry.DeepCopy()))).To(Succeed())
	g.Expect(w.Behind(notNumeric)).To(BeFalse(), "a resourceVersion that does not compare holds nothing back")
}
