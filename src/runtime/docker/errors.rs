//! bollard's errors, phrased for a user who must act on them (testcontainers' habit).

use bollard::errors::Error;

use crate::runtime::RuntimeError;

/// bollard's default socket (not re-exported by bollard).
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// The socket `connect_with_local_defaults` uses: `DOCKER_HOST` when it is a unix socket.
pub fn daemon_address() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string())
}

/// The error for "no Docker daemon answers" (exit code 3).
pub fn unreachable(err: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Infrastructure(format!(
        "cannot reach the Docker daemon at {}: {err}. Start it (e.g. `systemctl start docker` \
         or `dockerd &`) or use --runtime process",
        daemon_address()
    ))
}

/// The HTTP status of a daemon's answer, when the error is one.
pub fn status(err: &Error) -> Option<u16> {
    match err {
        Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The resource is already gone (cleanup treats this as done).
pub fn is_not_found(err: &Error) -> bool {
    status(err) == Some(404)
}

/// "Not modified": starting a running container, stopping a stopped one.
pub fn is_not_modified(err: &Error) -> bool {
    status(err) == Some(304)
}

/// Maps a bollard error of the operation `what` to a [`RuntimeError`]: transport failures
/// are infrastructure, a conflict with the container's state (409) is a usage error.
pub fn map(what: &str, err: Error) -> RuntimeError {
    match &err {
        Error::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            409 => RuntimeError::Usage(format!("{what}: {message}")),
            // Daemons before 23.0 answer some state conflicts with a plain 500.
            500 if is_state_conflict(message) => RuntimeError::Usage(format!("{what}: {message}")),
            _ => RuntimeError::Docker { what: format!("{what}: HTTP {status_code}: {}", message.trim()), source: err },
        },
        Error::IOError { .. }
        | Error::HyperResponseError { .. }
        | Error::HttpClientError { .. }
        | Error::HyperLegacyError { .. }
        | Error::RequestTimeoutError => unreachable(format!("{what}: {err}")),
        _ => RuntimeError::Docker { what: what.to_string(), source: err },
    }
}

/// "Container … is not running / is not paused / is already paused / is paused": the
/// request does not fit the node's current state.
fn is_state_conflict(message: &str) -> bool {
    [
        "is not running",
        "is not paused",
        "is already paused",
        "is paused",
    ]
    .iter()
    .any(|m| message.contains(m))
}
