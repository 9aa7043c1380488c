//go:build integration

// Package integration tests CAPR's API, manifests and manager binary against a real kube-apiserver.
package integration

import (
	"os"
	"testing"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, testenv.Options{}, &env))
}
