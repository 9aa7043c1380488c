package e2e

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
)

func TestMain(m *testing.M) {
	// The suite's clients log nothing worth reading; the managers' logs are kept per process.
	ctrl.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
