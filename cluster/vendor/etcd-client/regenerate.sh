#!/usr/bin/env bash
# Remakes src/rpc/generated/*.rs from the published etcd-client crate: builds it once in a
# scratch project (its build script runs protoc) and copies what the build script wrote.
# Needs protoc and Google's well-known .proto files: apt-get install protobuf-compiler
# libprotobuf-dev. Nothing else in the repository needs them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src"
printf '[package]\nname = "regen"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\netcd-client = "=%s"\n' "$version" >"$scratch/Cargo.toml"
echo 'fn main() {}' >"$scratch/src/main.rs"
(cd "$scratch" && cargo build --quiet)
out=$(ls -d "$scratch"/target/debug/build/etcd-client-*/out | head -1)
for f in authpb etcdserverpb mvccpb v3electionpb v3lockpb; do
  cp "$out/$f.rs" "$here/src/rpc/generated/$f.rs"
done
echo "regenerated $here/src/rpc/generated from etcd-client $version"
