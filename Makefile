# CAPR — Cluster API Provider Remote.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

ROOT := $(abspath .)
BIN := $(ROOT)/bin
TOOLS_MOD := $(ROOT)/hack/tools/go.mod
GO_TOOLS := go -C hack/tools
GOLANGCI_LINT_VERSION ?= v2.15.0
K8S_VERSION := v1.36.3
# kube-apiserver and kubectl built from source report v0.0.0 unless the version is stamped in.
K8S_LDFLAGS := $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,-X $(p).gitVersion=$(K8S_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=36)
CAPI_VERSION := v1.14.2
CAPI_LDFLAGS := -X sigs.k8s.io/cluster-api/version.gitVersion=$(CAPI_VERSION) -X sigs.k8s.io/cluster-api/version.gitMajor=1 -X sigs.k8s.io/cluster-api/version.gitMinor=14

CONTROLLER_GEN := $(BIN)/controller-gen
KUBE_APISERVER := $(BIN)/kube-apiserver
ETCD := $(BIN)/etcd
KUBECTL := $(BIN)/kubectl
KUBE_CONTROLLER_MANAGER := $(BIN)/kube-controller-manager
CAPI_MANAGER := $(BIN)/capi-manager
CLUSTERCTL := $(BIN)/clusterctl
CAPI_BOOTSTRAP_MANAGER := $(BIN)/capi-kubeadm-bootstrap-manager
CAPI_CONTROLPLANE_MANAGER := $(BIN)/capi-kubeadm-control-plane-manager
GOLANGCI_LINT := $(BIN)/golangci-lint
KUSTOMIZE := $(BIN)/kustomize
HELM := $(BIN)/helm
HELM3 := $(BIN)/helm3
CERT_MANAGER := $(BIN)/cert-manager
CAPI_OPERATOR := $(BIN)/cluster-api-operator
# The parts of a real Kubernetes node (issue 21); their versions are pinned by the go.mod files under hack/tools.
KUBEADM := $(BIN)/kubeadm
KUBELET := $(BIN)/kubelet
KUBE_SCHEDULER := $(BIN)/kube-scheduler
KUBE_PROXY := $(BIN)/kube-proxy
CONTAINERD := $(BIN)/containerd
CONTAINERD_SHIM := $(BIN)/containerd-shim-runc-v2
CTR := $(BIN)/ctr
RUNC := $(BIN)/runc
CNI_PLUGINS := $(addprefix $(BIN)/cni/,bridge host-local loopback portmap)
CRICTL := $(BIN)/crictl
NODE_TOOLS := $(KUBEADM) $(KUBELET) $(CONTAINERD) $(CONTAINERD_SHIM) $(CTR) $(RUNC) $(CNI_PLUGINS) $(CRICTL) $(KUBE_SCHEDULER) $(KUBE_PROXY)

CHART := charts/cluster-api-provider-remote

# What a release ships: the image the manifests name, and where make release-manifests writes them.
RELEASE_DIR := $(ROOT)/out
# The node images (make node-images) and the static binaries they are built from.
NODE_BIN := $(BIN)/node
NODE_IMAGES_DIR := $(RELEASE_DIR)/node-images

export KUBEBUILDER_ASSETS := $(BIN)
export CAPR_BIN_DIR := $(BIN)

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy code, CRDs, RBAC and webhook manifests.
	$(CONTROLLER_GEN) object paths=./api/...
	$(MAKE) manifests

.PHONY: manifests
manifests: $(CONTROLLER_GEN) $(KUSTOMIZE) ## Regenerate CRDs, RBAC and webhook manifests under config/, and the chart's templates from them.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths=./... output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) webhook paths=./... output:webhook:artifacts:config=config/webhook
	@# The Helm chart installs the same CRDs, and its templates are config/default's objects with the chart's values.
	cp config/crd/bases/*.yaml $(CHART)/crds/
	$(KUSTOMIZE) build config/default | go run ./hack/chartgen -out $(CHART)/templates -values $(CHART)/values.yaml

.PHONY: docs
docs: ## Regenerate docs/reference (the API reference and the table of conditions and reasons) from api/.
	go test ./internal/docgen -run TestReferenceIsUpToDate -count=1 -update

.PHONY: verify-generate
verify-generate: $(CONTROLLER_GEN) ## Fail when a generated file is stale (regenerates and compares).
	@before=$$(find api config $(CHART) -type f -print0 | sort -z | xargs -0 sha256sum); \
	$(MAKE) -s generate >/dev/null; \
	after=$$(find api config $(CHART) -type f -print0 | sort -z | xargs -0 sha256sum); \
	if [ "$$before" != "$$after" ]; then \
		echo "Generated files were stale and have been regenerated; review and commit them:"; \
		diff <(echo "$$before") <(echo "$$after") | grep '^[<>]' | awk '{print "  " $$3}' | sort -u; exit 1; fi

.PHONY: build
build: ## Build the manager binary into bin/manager.
	CGO_ENABLED=0 go build -o $(BIN)/manager .

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet on every file: the unit tier, the real-parts tier (tag integration) and the stress run.
	go vet ./...
	go vet -tags integration,stress ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint, shellcheck on the shell scripts, and refuse tracked binaries and files over 1 MB.
	hack/check-tracked.sh
	$(GOLANGCI_LINT) run ./...
	shellcheck hack/prereqs.sh hack/check-tracked.sh test/e2e/testdata/kubeadm test/standins/systemctl test/nodehost/nodeinit test/nodehost/systemctl
	shellcheck -s sh internal/host/sshhost/scripts/*.sh

##@ Testing

.PHONY: prereqs
prereqs: ## Check the OS programs the tests need (sshd, sudo, unshare, flock, ...); as root on Debian/Ubuntu, install them.
	@hack/prereqs.sh

# Two tiers. The unit tier (files without a build tag) needs no root, no kube-apiserver and no sshd: it is what
# `go test ./...` runs. The real-parts tier (files tagged `integration`) runs a real kube-apiserver and etcd, the
# webhooks over TLS, real sshd hosts and Cluster API's managers; it needs the binaries of `make test-tools`, and
# root for the sshd hosts (each in its own mount namespace). `make test` runs both.
.PHONY: test-unit
test-unit: ## Run the unit tier: no root, no kube-apiserver, no sshd (go test ./...).
	go test ./... -count=1 -timeout 5m

.PHONY: test
test: test-unit prereqs test-tools node-tools $(NODE_IMAGES_DIR)/images.tar verify-generate vet ## Run every test: the unit tier first, then integration and end-to-end on real parts, real Kubernetes nodes included.
	go test -tags integration ./... -count=1 -timeout 30m
	@# The cert-manager runner the install tests use, and the image builder, have their own modules and tests (the
	@# image builder's real-parts tests import the node images into a real containerd).
	go -C hack/tools/cert-manager test ./... -count=1
	go -C hack/image test -tags integration ./... -count=1

.PHONY: test-e2e
test-e2e: prereqs test-tools node-tools $(NODE_IMAGES_DIR)/images.tar ## Run the end-to-end suite: Cluster API's managers, CAPR installed by clusterctl, real sshd hosts.
	go test -tags integration ./test/e2e/... -count=1 -timeout 30m -v

.PHONY: stress
stress: prereqs test-tools ## Run CAPR under faults and load (3 replicas, SIGKILLs, broken hosts) and print figures against goals; STRESS_FULL=1: full size, writes bench/stress.md.
	STRESS_FULL=$(STRESS_FULL) go test -tags integration,stress ./test/stress/ -count=1 -timeout 60m -v -run '^TestStress$$'

.PHONY: test-tools
test-tools: $(KUBE_APISERVER) $(ETCD) $(KUBECTL) $(KUBE_CONTROLLER_MANAGER) $(CAPI_MANAGER) $(CAPI_BOOTSTRAP_MANAGER) $(CAPI_CONTROLPLANE_MANAGER) $(CLUSTERCTL) $(KUSTOMIZE) $(HELM) $(HELM3) $(CERT_MANAGER) $(CAPI_OPERATOR) ## Build the binaries the tests run (reused from bin/).

# The parts of a real Kubernetes node, in the order the real-node work needs them; make test builds them too.
.PHONY: node-tools
node-tools: prereqs $(NODE_TOOLS) ## Build the node parts (kubeadm, kubelet, containerd, runc, CNI plugins, crictl, ...) into bin/ (reused from bin/).

# make bench measures every figure of the project's speed and size goals (P1-P7) in one run, each against a baseline
# measured in the same run, prints one table, flags a ratio more than 20% worse than the committed bench/results.md,
# and writes bench/results.md. BENCH_SHORT=1 runs every figure once on a small scale (CI does, so a benchmark cannot
# rot unnoticed) and writes nothing. A missed goal is printed (MISSES) but does not fail the target.
BENCH_SHORT ?=

.PHONY: bench
bench: prereqs test-tools node-tools $(NODE_IMAGES_DIR)/images.tar ## Run the benchmarks P1-P7 (real kube-apiserver, etcd, sshd hosts, Cluster API, real nodes) and print one table of ratios against same-run baselines; writes bench/results.md (BENCH_SHORT=1: small scale, writes nothing).
	go run ./test/bench $(if $(BENCH_SHORT),-short,)

##@ Release

# make image builds the manager image without a container engine (hack/image, go-containerregistry): a static binary
# per platform, one layer, user 65532, entrypoint /manager, every timestamp the epoch, so the same sources give the
# same digest. It writes out/image (an OCI image layout), out/image.tar and out/image.digest.
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
VERSION ?= v0.1.0
IMAGE_REPO ?= ghcr.io/capr-project/cluster-api-provider-remote
IMAGE_REF ?= $(IMAGE_REPO):$(VERSION)
MANAGER_LDFLAGS := -s -w -buildid=

.PHONY: image
image: ## Build the manager image for IMAGE_PLATFORMS as an OCI layout and archive in out/ (no Docker daemon; reproducible digest).
	@mkdir -p $(RELEASE_DIR)
	@set -e; for p in $(IMAGE_PLATFORMS); do os=$${p%%/*}; arch=$${p##*/}; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -buildvcs=false -ldflags "$(MANAGER_LDFLAGS)" -o $(BIN)/manager-$$os-$$arch .; done
	go -C hack/image run . -bin-dir $(BIN) -out $(RELEASE_DIR)/image -ref $(IMAGE_REF) \
		-platforms "$$(echo $(IMAGE_PLATFORMS) | tr ' ' ',')" > $(RELEASE_DIR)/image.digest
	@echo "$(IMAGE_REF)@$$(cat $(RELEASE_DIR)/image.digest)"

# make node-images builds the images kubeadm names for K8S_VERSION, and the smoke Pod's application image, from static
# binaries built here, with no registry and no container engine (hack/image node-images, go-containerregistry): one
# layer per image with the binary, every timestamp the epoch, so the same sources give the same digests. kube-proxy's
# image also carries this machine's iptables tools, their libraries and the loader (the Debian package iptables). It writes
# out/node-images/images.tar (an OCI archive: `ctr -n k8s.io images import` names each image as kubeadm expects) and
# images.txt (name, digest, bytes). NODE_IMAGES_SKIP names repositories kubeadm lists that are not built (e.g. coredns).
# The node images the real-node tests and the quickstart import (test/nodehost); they skip, or fall back, without them.
export CAPR_NODE_IMAGES ?= $(NODE_IMAGES_DIR)
NODE_IMAGES_SKIP ?=
NODE_K8S_CMDS := kube-apiserver kube-controller-manager kube-scheduler kube-proxy
SMOKE_IMAGE ?= capr.local/smoke:v1

.PHONY: node-images
node-images: $(BIN)/kubeadm ## Build the images kubeadm needs and the smoke image as an OCI archive in out/node-images/ (no registry, no Docker daemon).
	@mkdir -p $(NODE_BIN) $(NODE_IMAGES_DIR)
	CGO_ENABLED=0 $(GO_TOOLS) build -ldflags "$(K8S_LDFLAGS)" -o $(NODE_BIN)/ $(addprefix k8s.io/kubernetes/cmd/,$(NODE_K8S_CMDS))
	CGO_ENABLED=0 $(GO_TOOLS) build -o $(NODE_BIN)/etcd go.etcd.io/etcd/server/v3
	CGO_ENABLED=0 go -C hack/tools/coredns build -o $(NODE_BIN)/coredns github.com/coredns/coredns
	CGO_ENABLED=0 go -C hack/image build -trimpath -buildvcs=false -ldflags "-s -w -buildid=" -o $(NODE_BIN)/ ./pause ./smoke
	$(BIN)/kubeadm config images list --kubernetes-version $(K8S_VERSION) > $(NODE_IMAGES_DIR)/kubeadm-images.txt
	go -C hack/image run . node-images -kubeadm-images $(NODE_IMAGES_DIR)/kubeadm-images.txt -bin-dir $(NODE_BIN) \
		-out $(NODE_IMAGES_DIR) -skip "$(NODE_IMAGES_SKIP)" -smoke-ref $(SMOKE_IMAGE) > $(NODE_IMAGES_DIR)/images.txt
	@cat $(NODE_IMAGES_DIR)/images.txt

# The node images, built once (make node-images rebuilds them).
$(NODE_IMAGES_DIR)/images.tar: $(BIN)/kubeadm
	$(MAKE) --no-print-directory node-images

.PHONY: release
release: image release-manifests ## Write out/: the image (OCI layout and archive) and the clusterctl release files naming it by digest.
	sed -i 's|image: $(IMAGE_REPO):$(VERSION)$$|image: $(IMAGE_REF)@'"$$(cat $(RELEASE_DIR)/image.digest)"'|' $(RELEASE_DIR)/infrastructure-components.yaml
	@grep -q "image: $(IMAGE_REF)@sha256:" $(RELEASE_DIR)/infrastructure-components.yaml || { echo "the release manifests do not name the image by digest"; exit 1; }
	@echo "out/ holds the release; the manager image is $(IMAGE_REF)@$$(cat $(RELEASE_DIR)/image.digest)"

.PHONY: release-manifests
release-manifests: $(KUSTOMIZE) ## Write the clusterctl release files to out/: infrastructure-components.yaml, metadata.yaml, cluster templates.
	@mkdir -p $(RELEASE_DIR)
	$(KUSTOMIZE) build config/default > $(RELEASE_DIR)/infrastructure-components.yaml
	cp metadata.yaml $(RELEASE_DIR)/metadata.yaml
	cp templates/*.yaml $(RELEASE_DIR)/

# make quickstart builds a real cluster on three local node hosts when this machine can run them (root, the node tools
# and images, which it builds first); otherwise the quickstart says what is missing and uses its stand-in mode (a
# kubeadm stand-in, no kubelet). QUICKSTART_MODE=standin chooses the stand-in (and builds no node parts);
# QUICKSTART_MODE=real refuses to fall back. CAPR_NODE_IMAGES=dir uses images built elsewhere.
QUICKSTART_MODE ?=

.PHONY: quickstart
quickstart: prereqs test-tools ## Run CAPR with Cluster API on a local management plane and a real cluster on 3 local hosts; Ctrl-C tears it down.
ifneq ($(QUICKSTART_MODE),standin)
	@$(MAKE) --no-print-directory node-tools || echo "quickstart: building the node tools failed; the quickstart says what real nodes miss"
	@[ -f "$(CAPR_NODE_IMAGES)/images.tar" ] || $(MAKE) --no-print-directory node-images || \
		echo "quickstart: building the node images failed; the quickstart says what real nodes miss"
endif
	@go build -o $(BIN)/quickstart ./test/e2e/quickstart
	@QUICKSTART_MODE=$(QUICKSTART_MODE) $(BIN)/quickstart

FUZZTIME ?= 10s
# Each fuzz target, as package:target. CI runs each for FUZZTIME; a crash it finds is written under the package's
# testdata/fuzz and becomes a regression test of `go test`.
FUZZ_TARGETS = ./internal/provisioning/cloudinit:FuzzParse ./internal/provisioning/cloudinit:FuzzPlanScript ./internal/sshrunner:FuzzRedact \
	./internal/pool:FuzzEndpoint ./internal/webhooks:FuzzValidateRemoteHost ./internal/provisioning/ignition:FuzzParseIgnition

.PHONY: fuzz
fuzz: ## Run every Go fuzz target for FUZZTIME (default 10s) each.
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; target=$${t##*:}; echo "==> $$target ($$pkg) for $(FUZZTIME)"; \
		go test $$pkg -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME); \
	done

##@ Tools (built from the Go module proxy into bin/, once)

$(CONTROLLER_GEN): $(TOOLS_MOD)
	$(GO_TOOLS) build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(ETCD): $(TOOLS_MOD)
	$(GO_TOOLS) build -o $@ go.etcd.io/etcd/server/v3

$(KUBE_APISERVER): $(TOOLS_MOD)
	$(GO_TOOLS) build -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/kube-apiserver

$(KUBE_CONTROLLER_MANAGER): $(TOOLS_MOD)
	$(GO_TOOLS) build -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/kube-controller-manager

$(KUBECTL): $(TOOLS_MOD)
	$(GO_TOOLS) build -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/kubectl

$(CAPI_MANAGER): $(TOOLS_MOD)
	$(GO_TOOLS) build -ldflags "$(CAPI_LDFLAGS)" -o $@ sigs.k8s.io/cluster-api/core

$(CAPI_BOOTSTRAP_MANAGER): $(TOOLS_MOD)
	$(GO_TOOLS) build -ldflags "$(CAPI_LDFLAGS)" -o $@ sigs.k8s.io/cluster-api/bootstrap/kubeadm

$(CAPI_CONTROLPLANE_MANAGER): $(TOOLS_MOD)
	$(GO_TOOLS) build -ldflags "$(CAPI_LDFLAGS)" -o $@ sigs.k8s.io/cluster-api/controlplane/kubeadm

$(CLUSTERCTL): $(TOOLS_MOD)
	$(GO_TOOLS) build -ldflags "$(CAPI_LDFLAGS)" -o $@ sigs.k8s.io/cluster-api/cmd/clusterctl

$(KUSTOMIZE): $(ROOT)/hack/tools/kustomize/go.mod
	go -C hack/tools/kustomize build -o $@ sigs.k8s.io/kustomize/kustomize/v5

$(HELM): $(ROOT)/hack/tools/helm4/go.mod
	go -C hack/tools/helm4 build -o $@ helm.sh/helm/v4/cmd/helm

$(HELM3): $(ROOT)/hack/tools/helm3/go.mod
	go -C hack/tools/helm3 build -o $@ helm.sh/helm/v3/cmd/helm

$(CERT_MANAGER): $(ROOT)/hack/tools/cert-manager/go.mod $(wildcard $(ROOT)/hack/tools/cert-manager/*.go)
	go -C hack/tools/cert-manager build -o $@ .

# cluster-api-operator's manager (cmd/ of its module), for TestOperator; a module of its own, as it pins its own
# Cluster API and controller-runtime.
$(CAPI_OPERATOR): $(ROOT)/hack/tools/operator/go.mod
	go -C hack/tools/operator build -o $@ sigs.k8s.io/cluster-api-operator/cmd

# The node parts (issue 21). Static (CGO_ENABLED=0) where they build that way, so the images made from them need no
# libc.
$(KUBEADM): $(TOOLS_MOD)
	CGO_ENABLED=0 $(GO_TOOLS) build -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/kubeadm

$(KUBELET): $(TOOLS_MOD)
	CGO_ENABLED=0 $(GO_TOOLS) build -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/kubelet

$(KUBE_SCHEDULER): $(TOOLS_MOD)
	CGO_ENABLED=0 $(GO_TOOLS) build -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/kube-scheduler

$(KUBE_PROXY): $(TOOLS_MOD)
	CGO_ENABLED=0 $(GO_TOOLS) build -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/kube-proxy

# containerd, its shim and ctr: a module of their own (they need k8s.io/* v0.37), pure Go and static like upstream's
# static release (no btrfs snapshotter, which needs cgo; the shim without gRPC as upstream builds it).
CONTAINERD_PKG := github.com/containerd/containerd/v2
CONTAINERD_LDFLAGS = -X $(CONTAINERD_PKG)/version.Version=$(shell go -C hack/tools/containerd list -m -f '{{.Version}}' $(CONTAINERD_PKG))
CONTAINERD_TAGS := urfave_cli_no_docs no_btrfs osusergo netgo
$(CONTAINERD) $(CTR): $(BIN)/%: $(ROOT)/hack/tools/containerd/go.mod
	CGO_ENABLED=0 go -C hack/tools/containerd build -tags "$(CONTAINERD_TAGS)" -ldflags "$(CONTAINERD_LDFLAGS)" -o $@ $(CONTAINERD_PKG)/cmd/$*

$(CONTAINERD_SHIM): $(ROOT)/hack/tools/containerd/go.mod
	CGO_ENABLED=0 go -C hack/tools/containerd build -tags "$(CONTAINERD_TAGS) no_grpc" -ldflags "$(CONTAINERD_LDFLAGS)" -o $@ $(CONTAINERD_PKG)/cmd/containerd-shim-runc-v2

# runc needs cgo for seccomp (libseccomp-dev, from make prereqs); linked statically as upstream's release is. Without
# the libpathrs tag (a Rust library Debian does not ship) it resolves paths with filepath-securejoin, in Go.
$(RUNC): $(ROOT)/hack/tools/runc/go.mod
	CGO_ENABLED=1 go -C hack/tools/runc build -buildmode=pie -tags "seccomp urfave_cli_no_docs netgo osusergo" -ldflags "-linkmode external -extldflags -static-pie" -o $@ github.com/opencontainers/runc

# The CNI plugins kubelet and containerd look for in one directory, bin/cni.
CNI_LDFLAGS = -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$(shell go -C hack/tools/cni list -m -f '{{.Version}}' github.com/containernetworking/plugins)
$(BIN)/cni/bridge $(BIN)/cni/loopback: $(BIN)/cni/%: $(ROOT)/hack/tools/cni/go.mod
	CGO_ENABLED=0 go -C hack/tools/cni build -ldflags "$(CNI_LDFLAGS)" -o $@ github.com/containernetworking/plugins/plugins/main/$*
$(BIN)/cni/host-local: $(ROOT)/hack/tools/cni/go.mod
	CGO_ENABLED=0 go -C hack/tools/cni build -ldflags "$(CNI_LDFLAGS)" -o $@ github.com/containernetworking/plugins/plugins/ipam/host-local
$(BIN)/cni/portmap: $(ROOT)/hack/tools/cni/go.mod
	CGO_ENABLED=0 go -C hack/tools/cni build -ldflags "$(CNI_LDFLAGS)" -o $@ github.com/containernetworking/plugins/plugins/meta/portmap

CRICTL_LDFLAGS = -X sigs.k8s.io/cri-tools/pkg/version.Version=$(shell go -C hack/tools/crictl list -m -f '{{.Version}}' sigs.k8s.io/cri-tools)
$(CRICTL): $(ROOT)/hack/tools/crictl/go.mod
	CGO_ENABLED=0 go -C hack/tools/crictl build -ldflags "$(CRICTL_LDFLAGS)" -o $@ sigs.k8s.io/cri-tools/cmd/crictl

$(GOLANGCI_LINT):
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
