//! Finding and removing a cluster's resources by their labels: [`discover`] for the
//! interactive commands, the removals behind `down` and [`down_all`], and the mapping of
//! container states to [`NodeState`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, Network};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;

use super::{errors, labels};
use crate::runtime::{NodeState, NodeStatus, Result, Role};

/// A live cluster found by its labels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterInfo {
    pub id: String,
    /// Host run directory (label `chaos.run_dir`).
    pub run_dir: PathBuf,
    pub nodes: Vec<NodeStatus>,
}

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DownSummary {
    pub containers: usize,
    pub networks: usize,
    pub images: usize,
}

/// The live clusters: containers labelled `chaos.cluster`, grouped by cluster id, sorted
/// by id. Clusters with only sidecars left are not listed ([`down_all`] removes them).
pub async fn discover(docker: &Docker) -> Result<Vec<ClusterInfo>> {
    let containers = list_containers(docker, labels::filter_has(labels::CLUSTER)).await?;
    let mut clusters: BTreeMap<String, ClusterInfo> = BTreeMap::new();
    for c in &containers {
        let Some(status) = node_status(c) else {
            continue;
        };
        let l = c.labels.as_ref();
        let (Some(id), Some(run_dir)) = (
            l.and_then(|l| l.get(labels::CLUSTER)),
            l.and_then(|l| l.get(labels::RUN_DIR)),
        ) else {
            continue;
        };
        clusters
            .entry(id.clone())
            .or_insert_with(|| ClusterInfo {
                id: id.clone(),
                run_dir: PathBuf::from(run_dir),
                nodes: Vec::new(),
            })
            .nodes
            .push(status);
    }
    let mut out: Vec<ClusterInfo> = clusters.into_values().collect();
    for c in &mut out {
        sort_nodes(&mut c.nodes);
    }
    Ok(out)
}

/// Removes everything labelled `chaos.cluster` (containers of every cluster, sidecars,
/// networks) and, with `include_images`, the images labelled `chaos.image`. For cleaning up
/// after a crash of `chaos` itself. Idempotent.
pub async fn down_all(docker: &Docker, include_images: bool) -> Result<DownSummary> {
    let mut summary = remove_labelled(docker, labels::filter_has(labels::CLUSTER)).await?;
    if include_images {
        summary.images = remove_images(docker).await?;
    }
    Ok(summary)
}

/// The networks matching `filters`.
pub(super) async fn list_networks(docker: &Docker, filters: &HashMap<String, Vec<String>>) -> Result<Vec<Network>> {
    let options = ListNetworksOptionsBuilder::default().filters(filters).build();
    docker.list_networks(Some(options)).await.map_err(|e| errors::map("listing networks", e))
}

/// Removes container `id` and its anonymous volumes, whatever its state (nodes and
/// sidecars alike). One already gone, or whose removal is already under way, counts as
/// removed.
pub async fn remove_container(docker: &Docker, id: &str) -> std::result::Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    match docker.remove_container(id, Some(options)).await {
        Err(e) if !errors::is_not_found(&e) && !is_removal_in_progress(&e) => Err(e),
        _ => Ok(()),
    }
}

pub(super) async fn list_containers(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
) -> Result<Vec<ContainerSummary>> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(|e| errors::map("listing containers", e))
}

/// A node container's status; `None` for containers that are not nodes (sidecars).
pub(super) fn node_status(c: &ContainerSummary) -> Option<NodeStatus> {
    let l = c.labels.as_ref()?;
    let role = match l.get(labels::ROLE)?.as_str() {
        "jobmanager" => Role::Jobmanager,
        "taskmanager" => Role::Taskmanager,
        "etcd" => Role::Etcd,
        "zookeeper" => Role::Zookeeper,
        "lines" => Role::Lines,
        _ => return None,
    };
    let state = match c.state {
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING) => {
            NodeState::Running
        }
        Some(ContainerSummaryStateEnum::PAUSED) => NodeState::Paused,
        Some(ContainerSummaryStateEnum::REMOVING) => NodeState::Missing,
        _ => NodeState::Exited, // created, exited, dead, stopping
    };
    Some(NodeStatus {
        name: l.get(labels::NODE)?.clone(),
        role,
        state,
    })
}

pub(super) fn role_of_name(name: &str) -> Option<Role> {
    [Role::Jobmanager, Role::Taskmanager, Role::Etcd, Role::Zookeeper, Role::Lines]
        .into_iter()
        .find(|r| {
            name.strip_prefix(r.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
        })
}

/// Jobmanagers, then taskmanagers, then etcd or zookeeper; `taskmanager-10` after
/// `taskmanager-9`.
pub(super) fn sort_nodes(nodes: &mut [NodeStatus]) {
    let key = |n: &NodeStatus| {
        let rank = match n.role {
            Role::Jobmanager => 0,
            Role::Taskmanager => 1,
            Role::Etcd | Role::Zookeeper => 2,
            Role::Lines => 3,
        };
        let number = n
            .name
            .rsplit('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        (rank, number, n.name.clone())
    };
    nodes.sort_by_key(key);
}

/// Force-removes the containers, then the networks, matching `filters`. Already gone
/// counts as removed; other failures are reported after everything else was tried.
pub(super) async fn remove_labelled(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
) -> Result<DownSummary> {
    let mut summary = DownSummary::default();
    let mut failures = Vec::new();

    let containers = list_containers(docker, filters.clone()).await?;
    let removals = containers
        .iter()
        .filter_map(|c| c.id.as_deref())
        .map(|id| async move {
            remove_container(docker, id).await.map_err(|e| errors::map(&format!("removing container {id}"), e))
        });
    for result in join_all(removals).await {
        match result {
            Ok(()) => summary.containers += 1,
            Err(e) => failures.push(e),
        }
    }

    for net in list_networks(docker, &filters).await? {
        let Some(id) = net.id.as_deref() else {
            continue;
        };
        match docker.remove_network(id).await {
            Ok(()) => summary.networks += 1,
            Err(e) if errors::is_not_found(&e) => summary.networks += 1,
            Err(e) => failures.push(errors::map(
                &format!("removing network {}", net.name.as_deref().unwrap_or(id)),
                e,
            )),
        }
    }
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(summary),
    }
}

fn is_removal_in_progress(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
        if message.contains("already in progress"))
}

/// Removes the images labelled `chaos.image`, by tag (an image with several tags cannot be
/// removed by id without force), or by id when untagged.
async fn remove_images(docker: &Docker) -> Result<usize> {
    let options = ListImagesOptionsBuilder::default()
        .all(false)
        .filters(&labels::filter_has(labels::IMAGE))
        .build();
    let images = docker
        .list_images(Some(options))
        .await
        .map_err(|e| errors::map("listing images", e))?;
    let mut removed = 0;
    let mut failures = Vec::new();
    for image in images {
        let refs: Vec<String> = if image.repo_tags.iter().any(|t| t != "<none>:<none>") {
            image.repo_tags.clone()
        } else {
            vec![image.id.clone()]
        };
        for r in refs {
            let options = RemoveImageOptionsBuilder::default().build();
            match docker.remove_image(&r, Some(options), None).await {
                Ok(_) => removed += 1,
                Err(e) if errors::is_not_found(&e) => {}
                Err(e) => failures.push(errors::map(&format!("removing image {r}"), e)),
            }
        }
    }
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_sort_by_role_then_number() {
        let n = |name: &str, role| NodeStatus {
            name: name.into(),
            role,
            state: NodeState::Running,
        };
        let mut nodes = vec![
            n("taskmanager-10", Role::Taskmanager),
            n("taskmanager-9", Role::Taskmanager),
            n("jobmanager-1", Role::Jobmanager),
        ];
        sort_nodes(&mut nodes);
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["jobmanager-1", "taskmanager-9", "taskmanager-10"]);
    }

    #[test]
    fn sidecars_are_not_nodes() {
        let summary = |role: &str| ContainerSummary {
            labels: Some(HashMap::from([
                (labels::CLUSTER.to_string(), "c".to_string()),
                (labels::ROLE.to_string(), role.to_string()),
                (labels::NODE.to_string(), "taskmanager-1".to_string()),
            ])),
            state: Some(ContainerSummaryStateEnum::PAUSED),
            ..Default::default()
        };
        assert!(node_status(&summary(labels::ROLE_SIDECAR)).is_none());
        let s = node_status(&summary("taskmanager")).unwrap();
        assert_eq!((s.role, s.state), (Role::Taskmanager, NodeState::Paused));
    }

    #[test]
    fn role_from_name() {
        assert_eq!(role_of_name("taskmanager-3"), Some(Role::Taskmanager));
        assert_eq!(role_of_name("jobmanager-1"), Some(Role::Jobmanager));
        assert_eq!(role_of_name("jobmanagerx"), None);
    }
}
