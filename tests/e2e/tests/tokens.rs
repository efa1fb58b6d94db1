//! Bootstrap tokens through the API and musterctl: the token string names the cluster and
//! pins its CA, only active tokens are listed by default, revocation sticks, and bad
//! requests are refused with errors that say why.

use std::process::Stdio;
use std::time::Duration;

use muster_e2e::{ClientError, Cluster, Options, v1};
use tonic::Code;

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    match result {
        Err(ClientError::Status(status)) => status.code(),
        other => panic!("expected an error status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_created_listed_and_revoked() {
    let cluster = Cluster::start(3, Options::tls()).await;
    let client = cluster.client();
    let meta = client.metadata().await.expect("metadata");

    let request = v1::CreateTokenRequest {
        ttl_seconds: 3600,
        uses: 2,
        labels: [("rack".to_string(), "r1".to_string())].into(),
        description: "e2e".into(),
    };
    let created = client.create_token(request).await.expect("create token");
    let token = muster_token::decode(&created.token).expect("the token string decodes");
    let record = created.record.expect("the stored record");
    assert_eq!(token.cluster_id, meta.cluster_id, "the token names this cluster");
    assert_eq!(token.token_id, record.token_id);
    assert_eq!((record.remaining_uses, record.labels.get("rack").map(String::as_str)), (2, Some("r1")));
    let ca_pem = std::fs::read_to_string(cluster.pki().expect("pki").operator().ca).expect("CA file");
    let pin = muster_tls::public_key_pin(&ca_pem, "ca.pem").expect("pin");
    assert_eq!(token.ca_pin_sha256, pin.to_vec(), "the token pins the cluster CA's key");
    assert!(record.secret_sha256.len() == 32 && !created.token.contains(&hex(&record.secret_sha256)));

    let listed = client.list_tokens(false).await.expect("list");
    assert!(listed.iter().any(|t| t.token_id == record.token_id), "active token not listed: {listed:?}");

    let revoked = client.revoke_token(&record.token_id).await.expect("revoke").expect("record");
    assert!(revoked.revoked && revoked.revoked_at_unix > 0);
    assert!(!client.list_tokens(false).await.expect("list").iter().any(|t| t.token_id == record.token_id));
    let all = client.list_tokens(true).await.expect("list --all");
    assert!(all.iter().any(|t| t.token_id == record.token_id && t.revoked), "revoked token missing from --all");

    assert_eq!(code_of(client.revoke_token("no-such-token").await), Code::NotFound);
    let too_long = v1::CreateTokenRequest { ttl_seconds: 400 * 24 * 3600, ..Default::default() };
    assert_eq!(code_of(client.create_token(too_long).await), Code::InvalidArgument);
    let bad_label = v1::CreateTokenRequest { labels: [(String::new(), "x".to_string())].into(), ..Default::default() };
    assert_eq!(code_of(client.create_token(bad_label).await), Code::InvalidArgument);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn musterctl_writes_a_token_file_readable_only_by_its_owner() {
    let cluster = Cluster::start(1, Options::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("token");
    let mut command = tokio::process::Command::new(muster_e2e::binaries::musterctl());
    command
        .args(["--insecure", "--endpoints", &cluster.addrs(1).api, "token", "create", "--ttl", "2h", "--uses", "3"])
        .args(["--label", "zone=a", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await.expect("in time").expect("run");
    assert!(output.status.success(), "token create: {}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&out).expect("token file");
    let token = muster_token::decode(&text).expect("the file holds a token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).expect("stat").permissions().mode() & 0o777, 0o600);
    let listed = cluster.client().list_tokens(false).await.expect("list");
    let record = listed.iter().find(|t| t.token_id == token.token_id).expect("listed");
    assert_eq!((record.total_uses, record.labels.get("zone").map(String::as_str)), (3, Some("a")));
}
