//! A real Prometheus server scraping a test's processes, so the metrics are checked the way an
//! operator reads them: through the scrape (the exposition must parse) and PromQL.
//!
//! [`Prometheus::start`] writes a config with the admin addresses as static targets (scraped
//! every second), runs `prometheus` on a free loopback port with its TSDB in a temporary
//! directory, and waits for `/-/ready`; it is SIGKILLed on drop (its log tail is printed when
//! a test fails). [`Prometheus::query`] runs an instant query through `/api/v1/query`, and
//! [`Prometheus::wait_for`] polls one until a predicate holds. The binary comes from `PATH`
//! (Debian: `apt-get install -y prometheus`) or `MUSTER_PROMETHEUS`; a missing one fails the
//! test with that advice ([`require_binary`]) rather than skipping it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::free_ports;
use crate::wait::eventually;

/// How long [`Prometheus::start`] waits for `/-/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one HTTP call to the server.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines printed when a test fails.
const LOG_TAIL_LINES: usize = 30;

/// What to do when the binary is missing.
const INSTALL_HINT: &str = "the end-to-end metrics tests need a Prometheus server: install it with \
     `apt-get install -y --no-install-recommends prometheus` (Debian/Ubuntu; any 2.x release works), or set \
     MUSTER_PROMETHEUS to the path of a `prometheus` binary";

/// One scrape target: the `job` label it gets and the admin address (`host:port`) it serves
/// `/metrics` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub job: String,
    pub addr: String,
}

impl Target {
    pub fn new(job: impl Into<String>, addr: impl Into<String>) -> Self {
        Self { job: job.into(), addr: addr.into() }
    }
}

/// One element of an instant query's result: its labels and value (a scalar result is one
/// sample without labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name` (empty if absent, as in PromQL).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

pub struct Prometheus {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The HTTP listener (`127.0.0.1:port`).
    pub addr: String,
    pub targets: Vec<Target>,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- prometheus log (last {LOG_TAIL_LINES} lines)\n{}", self.log_tail(LOG_TAIL_LINES));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The server's `prometheus.yml`: every target scraped each second, grouped by job.
pub fn render_config(targets: &[Target]) -> String {
    let mut jobs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for target in targets {
        jobs.entry(target.job.as_str()).or_default().push(target.addr.as_str());
    }
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, addrs) in jobs {
        let addrs: Vec<String> = addrs.iter().map(|addr| format!("'{addr}'")).collect();
        let _ = write!(config, "  - job_name: '{job}'\n    static_configs:\n      - targets: [{}]\n", addrs.join(", "));
    }
    config
}

/// `promtool check metrics` (shipped with Prometheus) on one `/metrics` body: the naming and
/// format problems it reports (units not in base units, `_count` on a gauge, a counter
/// without `_total`, …), or `Ok`.
pub fn promtool_check(body: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (it ships with Prometheus: apt-get install prometheus)")?;
    child.stdin.take().context("promtool's stdin")?.write_all(body.as_bytes())?;
    let output = child.wait_with_output()?;
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    ensure!(output.status.success() && report.trim().is_empty(), "promtool check metrics: {}", report.trim());
    Ok(())
}

fn binary() -> PathBuf {
    std::env::var_os("MUSTER_PROMETHEUS").map_or_else(|| PathBuf::from("prometheus"), PathBuf::from)
}

/// Panics with install advice unless `prometheus --version` runs: call it first thing, so a
/// machine without Prometheus fails before the test starts its cluster.
pub fn require_binary() {
    let binary = binary();
    match Command::new(&binary).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("`{} --version` failed ({status}): {INSTALL_HINT}", binary.display()),
        Err(err) => panic!("no usable `{}` binary ({err}): {INSTALL_HINT}", binary.display()),
    }
}

impl Prometheus {
    /// Starts a server scraping `targets` and waits until it is ready. Panics with install
    /// advice if there is no `prometheus` binary.
    pub async fn start(targets: Vec<Target>) -> Self {
        require_binary();
        let [port] = free_ports::<1>();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::Builder::new().prefix("muster-e2e-prometheus").tempdir().expect("prometheus temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, render_config(&targets)).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("prometheus log");
        let binary = binary();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn();
        let child = child.unwrap_or_else(|err| panic!("could not start {}: {err}", binary.display()));
        let mut server = Self { dir, child: Some(child), addr, targets };
        if let Err(err) = server.wait_ready().await {
            panic!("prometheus did not become ready: {err:#}\n{}", server.log_tail(LOG_TAIL_LINES));
        }
        server
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                bail!("prometheus exited with {status}");
            }
            let last = match self.get("/-/ready").await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => format!("/-/ready answered {status}: {}", body.trim()),
                Err(err) => format!("{err:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("not ready after {READY_TIMEOUT:?}; last: {last}");
            }
            tokio::time::sleep(crate::wait::POLL_INTERVAL).await;
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `GET path` (HTTP/1.0, so the body is never chunked): the status code and the body.
    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let call = async {
            let mut stream = tokio::net::TcpStream::connect(&self.addr).await?;
            let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
        };
        let response = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .with_context(|| format!("GET {path} on prometheus timed out"))?
            .with_context(|| format!("GET {path} on prometheus at {}", self.addr))?;
        let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response without a body")?;
        let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).context("no HTTP status")?;
        Ok((status, body.to_string()))
    }

    /// Runs the instant query `expr` now.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Sample>> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", url_encode(expr))).await?;
        parse_response(&body).with_context(|| format!("query {expr:?} (HTTP {status})"))
    }

    /// Polls `expr` until `predicate` accepts its samples, for at most `within`; the error
    /// shows the last samples.
    pub async fn wait_for(
        &self,
        expr: &str,
        predicate: impl Fn(&[Sample]) -> bool,
        within: Duration,
    ) -> anyhow::Result<Vec<Sample>> {
        eventually(within, || async {
            let samples = self.query(expr).await?;
            ensure!(predicate(&samples), "{expr} = {}", show(&samples));
            Ok(samples)
        })
        .await
        .with_context(|| format!("waiting for {expr}"))
    }
}

/// Samples as `{labels} value` lines, for failure messages.
pub fn show(samples: &[Sample]) -> String {
    if samples.is_empty() {
        return "(no samples)".to_string();
    }
    let lines: Vec<String> = samples
        .iter()
        .map(|sample| {
            let labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{{}}} {}", labels.join(", "), sample.value)
        })
        .collect();
    format!("[{}]", lines.join("; "))
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// An `/api/v1/query` answer as samples (vector or scalar results).
fn parse_response(body: &str) -> anyhow::Result<Vec<Sample>> {
    let json: serde_json::Value = serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?;
    if json["status"] != "success" {
        bail!("prometheus refused the query: {} ({})", json["error"], json["errorType"]);
    }
    let data = &json["data"];
    let value = |pair: &serde_json::Value| -> anyhow::Result<f64> {
        let text = pair[1].as_str().with_context(|| format!("no value in {pair}"))?;
        text.parse().with_context(|| format!("value {text:?}"))
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .context("a vector without results")?
            .iter()
            .map(|item| {
                let labels = item["metric"]
                    .as_object()
                    .context("a sample without labels")?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                Ok(Sample { labels, value: value(&item["value"])? })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample { labels: BTreeMap::new(), value: value(&data["result"])? }]),
        other => bail!("unexpected result type {other:?}: {body}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_groups_targets_by_job() {
        let targets = vec![
            Target::new("control-plane", "127.0.0.1:1"),
            Target::new("registrar", "127.0.0.1:2"),
            Target::new("control-plane", "127.0.0.1:3"),
        ];
        let config = render_config(&targets);
        assert!(config.contains("scrape_interval: 1s"), "{config}");
        assert!(
            config.contains(
                "- job_name: 'control-plane'\n    static_configs:\n      - targets: ['127.0.0.1:1', '127.0.0.1:3']\n"
            ),
            "{config}"
        );
        assert_eq!(config.matches("job_name").count(), 2, "{config}");
    }

    #[test]
    fn queries_are_url_encoded() {
        assert_eq!(url_encode("up{job=\"a b\"} == 1"), "up%7Bjob%3D%22a%20b%22%7D%20%3D%3D%201");
    }

    #[test]
    fn vector_scalar_and_error_answers_parse() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"registrar"},"value":[1700000000.1,"1"]},
            {"metric":{"job":"x"},"value":[1700000000.1,"+Inf"]}]}}"#;
        let samples = parse_response(vector).unwrap();
        assert_eq!((samples[0].label("job"), samples[0].value), ("registrar", 1.0));
        assert_eq!((samples[1].label("instance"), samples[1].value), ("", f64::INFINITY));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"2.5"]}}"#;
        assert_eq!(parse_response(scalar).unwrap()[0].value, 2.5);
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_response(error).unwrap_err().to_string().contains("parse error"));
    }
}
