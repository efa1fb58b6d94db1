//! Configuration text: each deployable's config from a TOML file, or from `MUSTER_*`
//! environment variables, through the shared loader and the deployable's `validate()`.
//! Whatever the text, loading and validation return a value or an error naming the field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_config::{ConfigError, ConfigLoader, ControlPlaneConfig};
use muster_fuzz::{CONFIG_AS_ENV, Input};
use muster_heartbeat_gateway::GatewayConfig;
use muster_registrar::RegistrarConfig;
use muster_worker_agent::AgentConfig;

fn loader(as_env: bool, text: &str) -> ConfigLoader {
    if as_env {
        let vars = text.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned()));
        ConfigLoader::new().env_vars(vars.collect::<Vec<_>>())
    } else {
        ConfigLoader::new().toml_text("fuzz.toml", text)
    }
}

fn report(result: Result<(), ConfigError>) {
    if let Err(err) = result {
        let _ = err.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let selector = input.u8();
    let Ok(text) = std::str::from_utf8(input.rest()) else { return };
    let loader = loader(selector & CONFIG_AS_ENV != 0, text);
    match selector & 3 {
        0 => report(loader.load::<ControlPlaneConfig>().and_then(|c| c.validate())),
        1 => report(loader.load::<RegistrarConfig>().and_then(|c| c.validate())),
        2 => report(loader.load::<GatewayConfig>().and_then(|c| c.validate())),
        _ => report(loader.load::<AgentConfig>().and_then(|c| c.validate().map(drop))),
    }
});
