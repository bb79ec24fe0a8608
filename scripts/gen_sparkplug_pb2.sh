#!/usr/bin/env bash
# Regenerates edge_agent/uplink/sparkplug_b_pb2.py from the vendored Eclipse Tahu
# edge_agent/uplink/sparkplug_b.proto (Sparkplug B 3.0, EPL-2.0), in a throwaway venv, so that
# neither grpcio-tools nor protoc is a dependency of the package or of its tests (issue 14).
# GRPCIO_TOOLS pins the protoc that writes the file: the pb2 checks at import that the protobuf
# runtime is at least that protoc's version (pyproject.toml's protobuf range follows it).
set -euo pipefail
cd "$(dirname "$0")/.."
GRPCIO_TOOLS="${GRPCIO_TOOLS:-1.85.4}"  # bundles protoc 7.36.x (protobuf runtime >= 7.36)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check "grpcio-tools==$GRPCIO_TOOLS"
"$tmp/venv/bin/python" -m grpc_tools.protoc -I edge_agent/uplink --python_out=edge_agent/uplink \
  edge_agent/uplink/sparkplug_b.proto
echo "gen_sparkplug_pb2: wrote edge_agent/uplink/sparkplug_b_pb2.py with grpcio-tools $GRPCIO_TOOLS" >&2
