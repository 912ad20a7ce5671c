// TEMPORARY probe (to be deleted): build time of the real streamd image.
use std::time::Instant;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let bin = chaos::images::build_streamd_binary().unwrap();
    let docker = chaos::runtime::docker::connect_docker().await.unwrap();
    let mut ctx = chaos::images::streamd_context(std::fs::read(&bin).unwrap());
    ctx.dockerfile.push_str(&format!("\n# probe {}\n", std::process::id()));
    let t0 = Instant::now();
    let tag = chaos::images::ensure_image(&docker, "chaos-probe", &ctx).await.unwrap();
    println!("build {} MiB: {tag} in {:?}", ctx.files[0].contents.len() >> 20, t0.elapsed());
    let t0 = Instant::now();
    chaos::images::ensure_image(&docker, "chaos-probe", &ctx).await.unwrap();
    println!("reuse in {:?}", t0.elapsed());
    docker.remove_image(&tag, None::<bollard::query_parameters::RemoveImageOptions>, None).await.unwrap();
}
