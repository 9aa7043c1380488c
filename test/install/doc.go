// Package install tests how CAPR is installed: the clusterctl components (config/default) and the Helm chart
// (charts/cluster-api-provider-remote), with the real kustomize, clusterctl and helm (v4 and v3) binaries.
package install
