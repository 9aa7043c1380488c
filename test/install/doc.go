// Package install tests how CAPR is installed: the clusterctl components (config/default), the Helm chart
// (charts/cluster-api-provider-remote) and cluster-api-operator's InfrastructureProvider, with the real kustomize,
// clusterctl, helm (v4 and v3) and cluster-api-operator binaries.
package install
