# The streamd image: FROM scratch around the static streamd binary. One image serves every
# node; the subcommand picks the role (`streamd jobmanager ...`, `streamd taskmanager ...`).
#
# `chaos build` (and every `chaos run` / `chaos up`) builds this very file through the Docker
# API, offline: cargo builds the binary on the host, chaos sends an in-memory context holding
# this Dockerfile and the binary, and tags the result chaos-streamd:<12 hex of sha256 of that
# context>, so a changed binary or Dockerfile gives a new image and an unchanged one is reused.
#
# By hand, the same image:
#   cargo build --release -p streamd
#   ctx=$(mktemp -d) && cp target/x86_64-unknown-linux-gnu/release/streamd "$ctx"/
#   docker build -f Dockerfile -t chaos-streamd:manual "$ctx"
# (A scratch context directory: the target directory holds gigabytes the daemon would
# otherwise receive.)
#
# The binary is linked statically (.cargo/config.toml: +crt-static), so the image holds
# nothing else: no shell, no libc. Ports, as in Flink: jobmanager RPC 6123 and REST 8081,
# taskmanager data 6121; nodes talk over the cluster's bridge network and nothing is
# published on the host, so there is no EXPOSE (each instruction costs the classic builder
# an intermediate container).

FROM scratch
COPY streamd /streamd
ENTRYPOINT ["/streamd"]
LABEL chaos.image=streamd
