# The CAPR manager image for those who build with a container engine: a static binary on a distroless base, running
# as non-root. `make image` builds the same image without one (hack/image), reproducibly; CI and releases use that.
FROM golang:1.26 AS build
WORKDIR /workspace
COPY go.mod go.sum ./
RUN go mod download
# Everything the module holds (.dockerignore leaves out tests, docs and build outputs): a new package needs no edit here.
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags "-s -w -buildid=" -o /manager .

FROM gcr.io/distroless/static:nonroot
COPY --from=build /manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
