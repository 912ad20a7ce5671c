//! Network faults as the executor sees them: a runtime either can degrade a node's
//! network (docker: sidecars in the node's namespace, see [`crate::netfault`]) or refuses
//! with a clear error (process: every node shares 127.0.0.1).

use super::ChaosError;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::process::ProcessRuntime;
use crate::scenario::NetemParams;

/// What undoes an applied network fault.
#[derive(Debug)]
pub struct NetUndo {
    pub ids: Vec<String>,
}

/// Runtimes that can (or explicitly cannot) inject network faults.
#[allow(async_fn_in_trait)]
pub trait NetCapable {
    async fn net_netem(&self, targets: &[String], p: &NetemParams) -> Result<NetUndo, ChaosError>;
    async fn net_partition(&self, groups: &[Vec<String>], one_way: bool) -> Result<NetUndo, ChaosError>;
    async fn net_undo(&self, h: NetUndo) -> Result<(), ChaosError>;
}

impl NetCapable for ProcessRuntime {
    async fn net_netem(&self, _: &[String], _: &NetemParams) -> Result<NetUndo, ChaosError> {
        Err(crate::runtime::process::refuse_network_fault().into())
    }
    async fn net_partition(&self, _: &[Vec<String>], _: bool) -> Result<NetUndo, ChaosError> {
        Err(crate::runtime::process::refuse_network_fault().into())
    }
    async fn net_undo(&self, _: NetUndo) -> Result<(), ChaosError> {
        Ok(())
    }
}

impl NetCapable for DockerRuntime {
    async fn net_netem(&self, _: &[String], _: &NetemParams) -> Result<NetUndo, ChaosError> {
        Err(ChaosError::Usage("netem: not wired yet".into()))
    }
    async fn net_partition(&self, _: &[Vec<String>], _: bool) -> Result<NetUndo, ChaosError> {
        Err(ChaosError::Usage("partition: not wired yet".into()))
    }
    async fn net_undo(&self, _: NetUndo) -> Result<(), ChaosError> {
        Ok(())
    }
}
