#!/usr/bin/env bash
# test.sh: the whole test suite on a fresh Debian 12 machine with Go. As root it first
# installs the system packages the integration tests use (libvirt, QEMU, Chromium);
# without root those tests skip and print why.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's machines carry go1.26.8, whose standard library has vulnerabilities
# fixed in go1.26.9 and go1.26.10 (govulncheck below finds them). The suite builds
# and tests with the patched release of the same Go line, which the module proxy
# serves, as go.mod's toolchain line asks of every build.
export GOTOOLCHAIN=go1.26.11

if [ "$(id -u)" = 0 ]; then
	bash scripts/install-deps.sh
else
	echo "test.sh: not root, so no system packages were installed; lab and browser tests will skip" >&2
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
# govulncheck without vuln.go.dev: the Go vulnerability database comes as the
# golang.org/x/vulndb module through the module proxy, and that module's indexdb
# lays it out as govulncheck's -db file:// wants. The whole suite builds with
# GOTOOLCHAIN (above), so the scan reuses the build cache.
vulndb=$(mktemp -d)
vulnsrc=$(go mod download -json golang.org/x/vulndb@latest | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
vulnver=$(go mod download -json golang.org/x/vulndb@latest | sed -n 's/^[[:space:]]*"Version": "\(.*\)",$/\1/p')
go run "golang.org/x/vulndb/cmd/indexdb@$vulnver" -vulns "$vulnsrc/data/osv" -out "$vulndb/db"
go run golang.org/x/vuln/cmd/govulncheck@v1.9.0 -db "file://$vulndb/db" ./...
rm -rf "$vulndb"
# Concurrent code runs under the race detector as well, one package at a time (see below).
# (The Prometheus lab test runs once, below: the source's concurrency is in its unit tests.)
go test -race -p 1 -timeout 30m -skip TestPrometheusSourceInLab ./internal/forecast/... ./internal/hypervisor/... ./internal/report/... ./internal/controller/... ./internal/store/... ./internal/server/... ./internal/metrics/... ./internal/demo/... ./internal/ha/... ./internal/source/...
# Packages one at a time: the lab tests each boot libvirt hosts and QEMU guests on
# this machine's cores, and two labs at once would slow each other past their timeouts.
go test -p 1 -timeout 30m ./...
