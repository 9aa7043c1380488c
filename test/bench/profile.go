package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"k8s.io/client-go/rest"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// apiserverProfile fetches a CPU profile of kube-apiserver (seconds long) into path.
func apiserverProfile(ctx context.Context, env *testenv.Environment, seconds int, path string) error {
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(env.Config.Host, "/"), seconds), nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
