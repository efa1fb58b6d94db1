//! `musterctl token ...`: bootstrap tokens workers register with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use muster_proto::v1;

use crate::connect::ConnectArgs;
use crate::output::{Format, print_json, print_table};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; prints it (or writes it to --out, mode 0600). It is shown only once.
    Create {
        /// How long the token stays valid, e.g. 1h or 30days.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How many workers may register with it (at least 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        uses: u32,
        /// Label given to every worker registered with it: KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// A note for operators, shown by `token list`.
        #[arg(long, default_value = "")]
        description: String,
        /// Write the token to this file (0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List tokens (active ones; --all includes expired, used-up and revoked).
    List {
        /// Include expired, used-up and revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id (the ID column of `token list`).
        token_id: String,
    },
}

pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn when(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)).to_string()
}

fn labels_text(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

fn record_json(record: &v1::TokenRecord) -> serde_json::Value {
    serde_json::json!({
        "token_id": record.token_id, "state": muster_token::state(record, now()),
        "created_at": when(record.created_at_unix), "expires_at": when(record.expires_at_unix),
        "remaining_uses": record.remaining_uses, "total_uses": record.total_uses,
        "labels": record.labels, "description": record.description, "revoked": record.revoked,
    })
}

pub async fn run(command: TokenCommand, connect: &ConnectArgs, format: Format) -> anyhow::Result<()> {
    let client = connect.client()?;
    match command {
        TokenCommand::Create { ttl, uses, labels, description, out } => {
            let request = v1::CreateTokenRequest {
                ttl_seconds: ttl.as_secs().max(1),
                uses,
                labels: labels.into_iter().collect(),
                description,
            };
            let response = client.create_token(request).await?;
            let record = response.record.unwrap_or_default();
            if let Some(path) = &out {
                muster_tls::write_atomic(path, format!("{}\n", response.token).as_bytes(), 0o600)?;
            }
            match format {
                Format::Json => {
                    let mut value = record_json(&record);
                    if out.is_none() {
                        value["token"] = serde_json::Value::String(response.token);
                    }
                    print_json(&value);
                }
                Format::Table if out.is_some() => {
                    println!(
                        "token {} written to {} (expires {})",
                        record.token_id,
                        out.unwrap_or_default().display(),
                        when(record.expires_at_unix)
                    );
                }
                Format::Table => println!("{}", response.token),
            }
        }
        TokenCommand::List { all } => {
            let tokens = client.list_tokens(all).await?;
            match format {
                Format::Json => print_json(&tokens.iter().map(record_json).collect()),
                Format::Table => {
                    let rows: Vec<Vec<String>> = tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.token_id.clone(),
                                muster_token::state(t, now()).to_string(),
                                format!("{}/{}", t.remaining_uses, t.total_uses),
                                when(t.expires_at_unix),
                                labels_text(&t.labels),
                                t.description.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "STATE", "USES LEFT", "EXPIRES", "LABELS", "DESCRIPTION"], &rows);
                }
            }
        }
        TokenCommand::Revoke { token_id } => {
            let record = client.revoke_token(&token_id).await?.unwrap_or_default();
            match format {
                Format::Json => print_json(&record_json(&record)),
                Format::Table => println!("token {} revoked", record.token_id),
            }
        }
    }
    Ok(())
}
