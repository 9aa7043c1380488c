package controllers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/bombs"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// TestBootstrapDataTooLarge: the attack was a bootstrap Secret of a few hundred KiB whose gzip+base64 files
// decompress to tens of MiB each: the manager decoded them all and went out of memory, and the next leader retried
// the same machine. Now the data is refused, terminally, before anything reaches the host.
func TestBootstrapDataTooLarge(t *testing.T) {
	for _, tc := range []struct{ name, data, format string }{
		{"cloud-config", string(bombs.CloudConfig(20, 16<<20)), ""},
		{"ignition", string(bombs.Ignition(20, 16<<20)), "ignition"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			h := sshdtest.Start(t)
			f := newFixture(t, tc.data, tc.format)
			f.keySecret(t, "key", h)
			rm := f.directMachine(h)
			g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

			c := waitReason(g, rm, infrav1.BootstrapDataTooLargeReason)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Message).To(ContainSubstring("decodes to more than 64 MiB"))
			g.Expect(c.Message).To(ContainSubstring("CAPR's limit for one bootstrap is 64 MiB"))
			g.Expect(c.Message).To(ContainSubstring("ship large files another way"))
			g.Expect(condition(get(g, rm), infrav1.ReadyCondition).Reason).To(Equal(infrav1.BootstrapDataTooLargeReason))

			// Terminal: never tried again (the retry interval is 0.5 s to 2 s in these tests).
			// Repeated events are counted in their series.
			tries := func() int {
				list := &eventsv1.EventList{}
				g.Expect(env.Client.List(ctx, list, client.InNamespace(f.ns))).To(Succeed())
				n := 0
				for _, e := range list.Items {
					if e.Regarding.Name == rm.Name && e.Reason == infrav1.BootstrapDataTooLargeReason {
						n++
						if e.Series != nil {
							n += int(e.Series.Count) - 1
						}
					}
				}
				return n
			}
			g.Eventually(tries, 10*time.Second, 100*time.Millisecond).Should(Equal(1))
			g.Consistently(tries, 4*time.Second, 200*time.Millisecond).Should(Equal(1))
			g.Expect(condition(get(g, rm), infrav1.BootstrapSucceededCondition).Reason).To(Equal(infrav1.BootstrapDataTooLargeReason))

			// Nothing reached the host.
			out, _ := h.Exec("ls /var/lib/capr/bootstrap.uid /var/lib/bomb/0 /var/lib/bomb/ran 2>&1 | grep -c 'No such file'")
			g.Expect(strings.TrimSpace(out)).To(Equal("3"), "no marker, no file, no command")

			g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
			waitGone(g, rm)
		})
	}
}
