//go:build integration

package e2e

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

func TestMain(m *testing.M) {
	sshdtest.SuiteNeedsRoot("test/e2e")
	// The suite's clients log nothing worth reading; the managers' logs are kept per process.
	ctrl.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
