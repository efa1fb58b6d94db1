//! Backups against a real cluster: `musterctl snapshot save` (given only a follower, it is sent
//! to the leader) writes a file holding every write acknowledged before it, every worker and
//! token, under the cluster's id and a revision at or past the last write; `snapshot inspect`
//! prints it back, and refuses a truncated, a corrupted and a foreign file by what is wrong.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use muster_e2e::fleet::register_all;
use muster_e2e::process::run_musterctl;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, v1};

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
    let registrar = Registrar::start_with(&cluster, "register_per_second = 1000.0\nregister_burst = 1000\n");
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
