//! `chaos doctor`: what this machine can run, and how to fix what is missing. Every check
//! is [`chaos::host::check`], the same one `chaos run` makes before it starts anything.

use std::collections::BTreeMap;
use std::path::Path;

use chaos::error::{exit, ChaosError};
use chaos::host::{self, Need};
use chaos::runtime::RuntimeKind;

/// Prints one line per need (with the fix when it is missing and the shipped scenarios it
/// blocks), then whether the default scenario can run. Exit 0 when it can, 3 when not.
pub(super) async fn doctor(scenarios_dir: &Path) -> Result<u8, ChaosError> {
    let docker = chaos::runtime::docker::connect_docker().await.ok();
    // Which shipped scenarios need what (scenarios that do not parse are `chaos lint`'s business).
    let mut blocked: BTreeMap<Need, Vec<String>> = BTreeMap::new();
    for file in host::scenario_files(scenarios_dir) {
        if let Ok(plan) = chaos::scenario::load(&file, None) {
            for need in host::needs(&plan, RuntimeKind::Docker) {
                blocked.entry(need).or_default().push(plan.name.clone());
            }
        }
    }
    let mut docker_ok = false;
    for need in Need::ALL {
        let f = host::check(need, docker.as_ref()).await;
        docker_ok |= need == Need::Docker && f.ok;
        println!("{:<5} {:<30} {}", if f.ok { "ok" } else { "MISS" }, need.title(), f.detail);
        if !f.ok {
            if let Some(fix) = &f.fix {
                println!("{:<36} fix: {fix}", "");
            }
            let names = blocked.get(&need).map(|v| v.join(", ")).unwrap_or_default();
            println!(
                "{:<36} blocks: {}{}",
                "",
                need.used_by(),
                if names.is_empty() { String::new() } else { format!(" — {names}") }
            );
        }
    }
    if docker_ok {
        println!("\nthe default scenario (scenarios/kill-tm2.yaml) can run here");
        Ok(exit::PASS)
    } else {
        println!("\nthe default scenario (scenarios/kill-tm2.yaml) cannot run here: it needs the Docker Engine");
        Ok(exit::INFRA)
    }
}
