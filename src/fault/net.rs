//! Network faults as a run sees them: on docker a [`NetContext`] (the Docker connection
//! and the sidecar image, made once per `chaos run` or interactive command) gives each
//! cluster a [`NetFaults`]; on the process runtime there is none and network faults are
//! refused (every node shares 127.0.0.1: no namespace to degrade).

use crate::error::ChaosError;
use crate::netfault::{self, NetFaults};
use crate::scenario::NetemParams;
use std::path::Path;

/// What a run needs to inject network faults on docker.
#[derive(Clone)]
pub struct NetContext {
    pub docker: bollard::Docker,
    /// The sidecar image (`chaos-netfault:<hash>`).
    pub image: String,
}

impl NetContext {
    /// Builds the sidecar image (offline, from the host's iptables/iproute2 and our
    /// `chaos-netd`), once per `chaos run`.
    pub async fn new(docker: bollard::Docker) -> Result<NetContext, ChaosError> {
        let bin = tokio::task::spawn_blocking(netfault::netd_binary)
            .await
            .map_err(|e| ChaosError::Other(e.to_string()))??;
        let image = netfault::ensure_image(&docker, &bin).await?;
        Ok(NetContext { docker, image })
    }

    /// The network faults of one cluster (containers `<id>-<node>` on `<id>-internal`).
    pub fn for_cluster(&self, cluster_id: &str, run_dir: &Path) -> NetFaults {
        NetFaults::new(
            self.docker.clone(),
            cluster_id,
            run_dir,
            crate::runtime::docker::spec::network_name(cluster_id),
            self.image.clone(),
        )
    }
}

/// A scenario's netem parameters (percentages) as the netfault module takes them (fractions).
pub fn to_netfault(p: &NetemParams) -> netfault::NetemParams {
    netfault::NetemParams {
        delay: p.delay,
        jitter: p.jitter,
        loss: p.loss.map(|v| v / 100.0),
        duplicate: p.duplicate.map(|v| v / 100.0),
        corrupt: p.corrupt.map(|v| v / 100.0),
        rate_bps: p.rate,
        distribution: p.distribution,
    }
}
