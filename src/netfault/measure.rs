//! Measuring network faults for the report: UDP round trips and TCP throughput between a
//! node (or a probe container on the cluster network) and a node, with `chaos-netd`
//! client/server sidecars.

use std::time::Duration;

use super::faults::NetFaults;
use super::probe::{ProbeStats, Throughput};
use super::sidecar;
use super::NetfaultError;

type Result<T> = std::result::Result<T, NetfaultError>;

impl NetFaults {
    /// Round trips from `from` (a node's namespace; `None`: a fresh probe container on the
    /// cluster network, outside every fault) to `to`: `count` UDP datagrams, one every 10 ms.
    /// The round trip crosses `to`'s faults both ways (and `from`'s, if any).
    pub async fn measure(&self, from: Option<&str>, to: &str, count: u32) -> Result<ProbeStats> {
        let port = 17_000 + rand::random::<u16>() % 1000;
        let server = vec!["echo".into(), "--port".into(), port.to_string()];
        let client = |ip: &str| {
            [
                "probe",
                "--to",
                &format!("{ip}:{port}"),
                "--count",
                &count.to_string(),
            ]
            .into_iter()
            .chain(["--interval-ms", "10", "--timeout-ms", "3000"])
            .map(String::from)
            .collect()
        };
        let limit = Duration::from_millis(u64::from(count) * 10) + Duration::from_secs(30);
        self.client_server(from, to, server, client, limit).await
    }

    /// Bulk TCP throughput from `from` (as in [`NetFaults::measure`]) to `to` for about
    /// `duration`: what a rate limit, or a delay through the window, leaves of a connection.
    pub async fn measure_throughput(
        &self,
        from: Option<&str>,
        to: &str,
        duration: Duration,
    ) -> Result<Throughput> {
        let port = 18_000 + rand::random::<u16>() % 1000;
        let server = vec!["sink".into(), "--port".into(), port.to_string()];
        let secs = duration.as_secs_f64();
        let client = |ip: &str| {
            [
                "send",
                "--to",
                &format!("{ip}:{port}"),
                "--secs",
                &secs.to_string(),
            ]
            .map(String::from)
            .to_vec()
        };
        self.client_server(from, to, server, client, duration + Duration::from_secs(90))
            .await
    }

    /// Runs `server` (a `chaos-netd` mode that says "listening") in `to`'s namespace and
    /// `client(to's address)` from `from`, and reads the client's JSON answer.
    async fn client_server<T: serde::de::DeserializeOwned>(
        &self,
        from: Option<&str>,
        to: &str,
        server: Vec<String>,
        client: impl FnOnce(&str) -> Vec<String>,
        limit: Duration,
    ) -> Result<T> {
        let target = sidecar::resolve(&self.docker, &self.cluster, to, &self.network).await?;
        let ip = target.ip.clone().unwrap_or_default();
        let ns = format!("container:{}", target.container_id);
        let server_id =
            sidecar::start(&self.docker, self.sidecar_spec(to, "measure", ns, server)).await?;
        let result = async {
            sidecar::wait_for_stderr(
                &self.docker,
                &server_id,
                "listening",
                Duration::from_secs(10),
            )
            .await?;
            let mode = match from {
                Some(node) => {
                    let f =
                        sidecar::resolve(&self.docker, &self.cluster, node, &self.network).await?;
                    format!("container:{}", f.container_id)
                }
                None => self.network.clone(),
            };
            let cmd = client(&ip);
            let what = cmd.first().cloned().unwrap_or_default();
            let client_id =
                sidecar::start(&self.docker, self.sidecar_spec(to, "measure", mode, cmd)).await?;
            let out = sidecar::wait_output(&self.docker, &client_id, limit).await;
            let _ = sidecar::remove(&self.docker, &client_id).await;
            let (code, stdout, stderr) = out?;
            let line = stdout
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .unwrap_or_default();
            serde_json::from_str::<T>(line).map_err(|e| NetfaultError::Command {
                command: format!("chaos-netd {what}"),
                code,
                output: format!("{e}: {stdout}{stderr}"),
            })
        }
        .await;
        let _ = sidecar::remove(&self.docker, &server_id).await;
        result
    }
}
