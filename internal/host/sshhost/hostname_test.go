//go:build integration

package sshhost

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// TestInvalidHostnameIsNotUsed: a host reporting a host name that is no DNS name (here shell text, and a bootstrap
// token, which is redacted) used to have it copied into status.addresses and used to match Nodes. Now the
// bootstrap and the adoption succeed without it, and the log says the host reported an invalid name, redacted.
func TestInvalidHostnameIsNotUsed(t *testing.T) {
	for test, name := range map[string]string{"shell-text": `Evil_Host$(true)`, "token": "q7w8e9.r0t1y2u3i4o5p6a7"} {
		t.Run(test, func(t *testing.T) {
			g := NewWithT(t)
			h := sshdtest.StartWith(t, sshdtest.Options{Sbin: sshdtest.StandIns(t, map[string]string{"hostname": "echo '" + name + "'"})})
			var mu sync.Mutex
			var logged []string
			ctx := ctrl.LoggerInto(context.Background(), funcr.New(func(_, args string) {
				mu.Lock()
				defer mu.Unlock()
				logged = append(logged, args)
			}, funcr.Options{}))

			res, err := (&Service{}).Bootstrap(ctx, host.BootstrapRequest{Identity: "m1", Config: testConfig(h), Data: []byte("#!/bin/sh\ntrue\n")})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Hostname).To(BeEmpty())
			res, err = (&Service{}).Adopt(ctx, testConfig(h), "m1")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Adopted).To(BeTrue())
			g.Expect(res.Hostname).To(BeEmpty())

			mu.Lock()
			defer mu.Unlock()
			text := strings.Join(logged, "\n")
			g.Expect(text).To(ContainSubstring("The host reported an invalid host name"))
			g.Expect(strings.Count(text, "invalid host name")).To(Equal(2))
			g.Expect(text).NotTo(ContainSubstring("q7w8e9.r0t1y2u3i4o5p6a7"))
		})
	}
}
