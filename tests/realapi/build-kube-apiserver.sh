#!/usr/bin/env bash
# Builds kube-apiserver from Go modules for the real-API test tier; prints the binary's path.
# Cached outside the checkout by version, so only the first run pays the build (~4-8 min cold on 2 cores).
#   build-kube-apiserver.sh            (KUBE_VERSION=1.35.4, cache in ~/.cache/kubernetai-test)
# Exit 3 (with one line on stderr) when Go is not installed.
set -euo pipefail
version=${KUBE_VERSION:-1.35.4}
cache=${KUBERNETAI_TEST_CACHE:-$HOME/.cache/kubernetai-test}
out="$cache/kube-apiserver-v$version"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "go is not installed" >&2; exit 3; }
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod
gomod=$(go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
# ./staging/...; outside its tree each is the same-numbered v0.x release.
staging=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
{
  printf 'module kubernetai.test/kube-apiserver\n\ngo 1.25\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$version"
  for m in $staging; do printf '\t%s => %s v0.%s\n' "$m" "$m" "${version#1.}"; done
  printf ')\n'
} > go.mod
printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go
go mod tidy >&2
go build -trimpath -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
mv "$out.tmp" "$out"
echo "$out"
