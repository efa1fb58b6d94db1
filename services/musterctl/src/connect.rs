//! Connection flags shared by every command that talks to the cluster (cluster, kv, token,
//! workers). They are global, so they go before or after the subcommand; `main` keeps them out
//! of the help of the commands that work locally (dev, tls, completions) and refuses them there.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Id};
use muster_client::{ClientOptions, ControlPlaneClient};

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection")]
pub struct ConnectArgs {
    /// Control-plane API addresses (comma-separated host:port).
    #[arg(long, global = true, env = "MUSTER_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:3669")]
    pub endpoints: Vec<String>,
    /// Directory from `musterctl tls init` (uses ca.pem, operator.pem, operator-key.pem).
    #[arg(long, value_name = "DIR", global = true, env = "MUSTER_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// CA certificate (overrides --tls-dir).
    #[arg(id = "tls_ca", long = "ca", value_name = "FILE", global = true, env = "MUSTER_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (overrides --tls-dir).
    #[arg(id = "tls_cert", long = "cert", value_name = "FILE", global = true, env = "MUSTER_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key (overrides --tls-dir).
    #[arg(id = "tls_key", long = "key", value_name = "FILE", global = true, env = "MUSTER_KEY")]
    pub key: Option<PathBuf>,
    /// Plaintext, for clusters started with --insecure.
    #[arg(long, global = true, env = "MUSTER_INSECURE")]
    pub insecure: bool,
    /// Give up on a call after this long (leader changes are retried until then).
    #[arg(long, global = true, default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The ids of the connection flags.
pub fn arg_ids() -> Vec<Id> {
    ConnectArgs::augment_args(clap::Command::new("connect")).get_arguments().map(|arg| arg.get_id().clone()).collect()
}

impl ConnectArgs {
    pub fn client(&self) -> anyhow::Result<ControlPlaneClient> {
        let mut options = ClientOptions::new(self.endpoints.clone());
        options.timeout = self.timeout;
        if !self.insecure {
            let dir = self.tls_dir.clone();
            let pick = |explicit: &Option<PathBuf>, file: &str| -> anyhow::Result<PathBuf> {
                explicit.clone().or_else(|| dir.as_ref().map(|d| d.join(file))).with_context(|| {
                    format!("no TLS {file} given: pass --tls-dir (from `musterctl tls init`), --ca/--cert/--key, or --insecure")
                })
            };
            let files = muster_tls::TlsFiles {
                ca: pick(&self.ca, "ca.pem")?,
                cert: pick(&self.cert, "operator.pem")?,
                key: pick(&self.key, "operator-key.pem")?,
            };
            options.tls = Some(files.client_for(muster_tls::ServerCheck::RoleAndHost(muster_tls::Role::ControlPlane))?);
        }
        Ok(ControlPlaneClient::new(options)?)
    }
}
