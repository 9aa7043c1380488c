//go:build integration

package webhooks_test

import (
	"flag"
	"os"
	"testing"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

var env *testenv.Environment

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		// The fuzz targets need no apiserver, and every fuzz worker runs TestMain.
		os.Exit(m.Run())
	}
	os.Exit(testenv.Run(m, testenv.Options{}, &env))
}

func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}
