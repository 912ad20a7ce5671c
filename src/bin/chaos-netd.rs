//! `chaos-netd`: the helper that runs inside network-fault sidecars (see
//! `chaos::netfault::netd`). Static, like every binary of the workspace, so it can be
//! copied into a `FROM scratch` image.

fn main() -> std::process::ExitCode {
    chaos::netfault::netd::main()
}
