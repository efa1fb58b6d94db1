//! Backups against a real cluster: `musterctl snapshot save` (given only a follower, it is sent
//! to the leader) writes a file holding every write acknowledged before it, every worker and
//! token, under the cluster's id and a revision at or past the last write; `snapshot inspect`
//! prints it back, and refuses a truncated, a corrupted and a foreign file by what is wrong.
//! `control-plane restore` rebuilds a cluster whose every data dir was destroyed from it.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use muster_e2e::fleet::{BeatPlan, Fleet, register_all, token_for, wait_ready_workers};
use muster_e2e::gateway::Gateway;
use muster_e2e::process::run_musterctl;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, eventually_msg, v1};

const WORKERS: usize = 10;
const KEYS: usize = 200;

/// `musterctl --endpoints ENDPOINT (operator TLS) ARGS`.
async fn musterctl(cluster: &Cluster, endpoint: &str, args: &[&OsString]) -> (bool, String, String) {
    let files = cluster.pki().expect("pki").operator();
    let mut all: Vec<OsString> = ["--timeout", "20s", "--endpoints", endpoint].map(OsString::from).into();
    for (flag, file) in [("--ca", &files.ca), ("--cert", &files.cert), ("--key", &files.key)] {
        all.extend([OsString::from(flag), file.into()]);
    }
    all.extend(args.iter().map(|arg| (*arg).clone()));
    run_musterctl(all, Duration::from_secs(60)).await
}

fn os(text: &str) -> OsString {
    OsString::from(text)
}

async fn inspect(cluster: &Cluster, file: &Path) -> (bool, String, String) {
    let endpoint = cluster.addrs(1).api.clone();
    musterctl(
        cluster,
        &endpoint,
        &[&os("snapshot"), &os("inspect"), &file.as_os_str().to_owned(), &os("-o"), &os("json")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_snapshot_holds_every_acknowledged_write_and_bad_files_are_refused() {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(3, options).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let client = cluster.client();
    let token = client
        .create_token(v1::CreateTokenRequest { ttl_seconds: 600, uses: WORKERS as u32, ..Default::default() })
        .await
        .expect("a token")
        .token;
    let pki = cluster.pki().expect("pki");
    register_all(&registrar.addr, &pki.ca_pem(), &token, WORKERS, 4).await.expect("workers");
    let mut last_write = 0;
    for i in 0..KEYS {
        last_write =
            client.put(&format!("backup/{i:04}"), format!("value {i}").into_bytes()).await.expect("a put").index;
    }
    let cluster_id = client.metadata().await.expect("metadata").cluster_id;

    // Saved through a follower: the call goes to the leader.
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cluster.backup");
    let follower_api = cluster.addrs(follower).api.clone();
    let save = [&os("snapshot"), &os("save"), &file.as_os_str().to_owned()];
    let (ok, stdout, stderr) = musterctl(&cluster, &follower_api, &save).await;
    assert!(ok, "snapshot save failed: {stdout}\n{stderr}");
    assert!(stdout.contains(&cluster_id), "save names the cluster: {stdout}");

    let (ok, stdout, stderr) = inspect(&cluster, &file).await;
    assert!(ok, "inspect failed: {stdout}\n{stderr}");
    let header: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(header["cluster_id"], cluster_id.as_str());
    assert_eq!(header["node_id"], leader, "taken on the leader");
    assert!(
        header["revision"].as_u64().unwrap() >= last_write,
        "revision {} < last write {last_write}",
        header["revision"]
    );
    // The probe keys the harness wrote on start are there too.
    assert!(header["kv_keys"].as_u64().unwrap() >= KEYS as u64, "{header}");
    assert_eq!(header["workers"], WORKERS as u64);
    assert_eq!(header["tokens"], 1);
    assert_eq!(header["format_version"], 1);

    // Backups asked for all at once: each comes out whole, or is refused while another runs.
    let mut saves = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let client = cluster.client();
        saves.spawn(async move { client.save_snapshot().await });
    }
    let mut whole = 0;
    while let Some(save) = saves.join_next().await {
        match save.expect("a save task") {
            Ok((header, snapshot)) => {
                assert_eq!(header.snapshot_bytes, snapshot.len() as u64);
                whole += 1;
            }
            Err(err) => assert!(err.to_string().contains("already being taken"), "a concurrent save: {err}"),
        }
    }
    assert!(whole >= 1, "no concurrent save came out");

    // Saving over it needs --force.
    let (ok, _, stderr) = musterctl(&cluster, &follower_api, &save).await;
    assert!(!ok && stderr.contains("exists") && stderr.contains("--force"), "{stderr}");

    // A cut, a flipped byte and a file that is no backup are refused by what is wrong.
    let bytes = std::fs::read(&file).expect("the backup");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("truncated", bytes[..bytes.len() * 2 / 3].to_vec(), "truncated"),
        (
            "corrupted",
            {
                let mut flipped = bytes.clone();
                let middle = flipped.len() / 2;
                flipped[middle] ^= 0x20;
                flipped
            },
            "corrupt",
        ),
        ("foreign", b"MUSTER-SNAPSHOT 1\nnot a backup at all".to_vec(), "not a Muster backup"),
    ];
    for (name, contents, expected) in cases {
        let bad = dir.path().join(format!("{name}.backup"));
        std::fs::write(&bad, contents).expect("writing a bad file");
        let (ok, stdout, stderr) = inspect(&cluster, &bad).await;
        assert!(!ok, "a {name} file was accepted: {stdout}");
        assert!(stderr.contains(expected) && stderr.contains(&bad.display().to_string()), "{name}: {stderr}");
    }
}

/// `control-plane --config <node id's config> restore --snapshot FILE`, run to its end.
fn restore(cluster: &Cluster, id: u64, file: &Path) -> std::process::Output {
    std::process::Command::new(muster_e2e::binaries::control_plane())
        .arg("--config")
        .arg(cluster.config_path(id))
        .args(["restore", "--snapshot"])
        .arg(file)
        .output()
        .expect("control-plane restore runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_whose_data_dirs_are_destroyed_comes_back_from_a_backup_with_its_id_and_writes() {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let mut cluster = Cluster::start(3, options).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let client = cluster.client();
    let ca_pem = cluster.pki().expect("pki").ca_pem();
    let token = token_for(&cluster, WORKERS as u32 + 1).await;
    let identities = register_all(&registrar.addr, &ca_pem, &token, WORKERS, 4).await.expect("workers");
    let _fleet = Fleet::start(&identities, &ca_pem, BeatPlan { fixed_interval: None }).expect("the fleet");
    let ready = v1::ListWorkersRequest { state: v1::WorkerState::Ready as i32, ..Default::default() };
    wait_ready_workers(&cluster, WORKERS, Duration::from_secs(60)).await;
    for i in 0..KEYS {
        client.put(&format!("kept/{i:04}"), format!("value {i}").into_bytes()).await.expect("a put");
    }
    let cluster_id = client.metadata().await.expect("metadata").cluster_id;
    let (header, snapshot) = client.save_snapshot().await.expect("a backup");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cluster.backup");
    std::fs::write(&file, muster_proto::backup::encode(header, &snapshot)).expect("writing the backup");
    // Written after the backup: not in it.
    client.put("after-the-backup", b"x".to_vec()).await.expect("a put");

    // Every data dir destroyed; each node restored from the file, then started.
    for id in cluster.ids() {
        cluster.kill(id);
        std::fs::remove_dir_all(cluster.data_dir(id)).expect("destroying the data dir");
    }
    for id in cluster.ids() {
        let output = restore(&cluster, id, &file);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "restore of node {id}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(&cluster_id), "{stdout}");
        // A second restore into the same dir is refused: it holds a node's data now.
        let again = restore(&cluster, id, &file);
        assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already holds"));
    }
    for id in cluster.ids() {
        cluster.restart(id);
    }
    if let Err(err) = cluster.wait_started(Duration::from_secs(60)).await {
        let logs: Vec<String> = cluster
            .ids()
            .into_iter()
            .map(|id| {
                let log = cluster.log_text(id);
                let panics: Vec<&str> = log.lines().filter(|l| l.contains("panick")).take(5).collect();
                format!("node {id}:\n{}\n{}", panics.join("\n"), cluster.log_tail(id, 10))
            })
            .collect();
        panic!("the restored cluster is not ready: {err:#}\n{}", logs.join("\n---\n"));
    }

    let client = cluster.client();
    assert_eq!(client.metadata().await.expect("metadata").cluster_id, cluster_id, "the cluster id is kept");
    for i in [0, KEYS / 2, KEYS - 1] {
        let value =
            client.get(&format!("kept/{i:04}"), muster_e2e::ReadConsistency::Linearizable).await.expect("a read");
        assert_eq!(value.map(|kv| kv.value), Some(format!("value {i}").into_bytes()));
    }
    let after = client.get("after-the-backup", muster_e2e::ReadConsistency::Linearizable).await.expect("a read");
    assert!(after.is_none(), "a write after the backup came back");
    // And it takes writes.
    client.put("after-the-restore", b"y".to_vec()).await.expect("a write on the restored cluster");

    // The workers beat on with the identities they had: Ready, none replaced; and the
    // registrar registers with the restored token and worker CA record.
    eventually_msg("every worker Ready on the restored cluster", Duration::from_secs(60), || async {
        let workers = cluster.client().list_workers(ready.clone()).await?;
        let ids: std::collections::BTreeSet<u64> = workers.iter().map(|w| w.worker_id).collect();
        let expected: std::collections::BTreeSet<u64> = identities.iter().map(|i| i.worker_id).collect();
        anyhow::ensure!(ids == expected, "Ready: {ids:?}");
        Ok(())
    })
    .await;
    let newcomer = register_all(&registrar.addr, &ca_pem, &token, 1, 1).await.expect("a registration");
    assert!(newcomer[0].worker_id > identities.iter().map(|i| i.worker_id).max().unwrap_or(0), "ids are not reused");
}
