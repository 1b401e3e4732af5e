# sfwatch in a container: a static binary on an empty base.
#
# Build:  make docker   (docker build --build-arg VERSION=$(git describe ...) -t sfwatch .)
# Run:    docker run --rm --privileged --pid=host --cgroupns=host \
#           -v /sys/fs/cgroup:/sys/fs/cgroup -v /sys/kernel/tracing:/sys/kernel/tracing \
#           sfwatch attach --pid 1234 --metrics-addr :9464
# --privileged: loading BPF programs and creating cgroups need CAP_SYS_ADMIN,
# CAP_BPF and CAP_PERFMON; --pid=host and --cgroupns=host: to see the host's
# processes and cgroup tree; the tracefs mount: to find the tracepoints.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The BPF objects are committed (internal/loader/*_bpfel.o): no clang here.
# The same build as make build. The context has no .git (.dockerignore), so
# the version comes as a build argument: make docker passes git describe's.
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /sfwatch ./cmd/sfwatch
# scratch has no /tmp, which selftest's workload writes its file to.
RUN mkdir -m 1777 /empty-tmp

FROM scratch
COPY --from=build /sfwatch /sfwatch
COPY --from=build --chmod=1777 /empty-tmp /tmp
ENTRYPOINT ["/sfwatch"]
CMD ["doctor"]
