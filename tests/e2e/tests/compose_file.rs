//! compose.yaml as Compose reads it (v2 `docker compose` and v1.29 `docker-compose`, each that
//! is installed): valid, and every service that runs a Muster image can be built from source
//! (`build:` naming the stage of deploy/docker/Dockerfile.source for the binary its image is
//! named after), so a plain `docker compose up` works from a fresh clone on a machine that can
//! pull the Rust image, while compose-up.sh builds offline and never builds from source.

use std::collections::BTreeMap;
use std::process::Command;

use muster_e2e::compose::repo_root;

/// What the normalized `config` output says of one service.
#[derive(Debug, Default)]
struct Service {
    image: String,
    build: BTreeMap<String, String>,
}

/// The services of `config`'s normalized YAML (two-space indents, one key per line).
fn services(config: &str) -> BTreeMap<String, Service> {
    let mut services = BTreeMap::new();
    let (mut in_services, mut current, mut in_build) = (false, None::<String>, false);
    for line in config.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        match indent {
            0 => {
                in_services = text == "services:";
                current = None;
            }
            2 if in_services => {
                let name = text.trim_end_matches(':').to_string();
                services.entry(name.clone()).or_insert_with(Service::default);
                current = Some(name);
                in_build = false;
            }
            4 => {
                in_build = text == "build:";
                if let (Some(name), Some(image)) = (&current, text.strip_prefix("image: ")) {
                    services.get_mut(name).expect("entered").image = image.trim_matches(['\'', '"']).to_string();
                }
            }
            6 if in_build => {
                if let (Some(name), Some((key, value))) = (&current, text.split_once(": ")) {
                    let build = &mut services.get_mut(name).expect("entered").build;
                    build.insert(key.to_string(), value.trim_matches(['\'', '"']).to_string());
                }
            }
            _ => {}
        }
    }
    services
}

fn installed_composes() -> Vec<Vec<&'static str>> {
    let works = |program: &[&str]| {
        let (first, rest) = program.split_first().expect("a program");
        Command::new(first).args(rest).arg("version").output().is_ok_and(|out| out.status.success())
    };
    [vec!["docker", "compose"], vec!["docker-compose"]].into_iter().filter(|program| works(program)).collect()
}

#[test]
fn every_muster_service_builds_from_source_and_the_file_is_valid() {
    let composes = installed_composes();
    assert!(!composes.is_empty(), "neither `docker compose` nor `docker-compose` is installed");
    for compose in composes {
        let (program, args) = compose.split_first().expect("a program");
        let output = Command::new(program)
            .args(args)
            .args(["-f", "compose.yaml", "config"])
            .current_dir(repo_root())
            .output()
            .expect("running compose config");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{compose:?} config: {stderr}");
        let config = String::from_utf8_lossy(&output.stdout);
        let services = services(&config);
        let muster: Vec<_> = services.iter().filter(|(_, s)| s.image.starts_with("muster/")).collect();
        assert!(muster.len() >= 8, "{compose:?}: too few Muster services found in:\n{config}");
        for (name, service) in muster {
            let binary = service.image.trim_start_matches("muster/").split(':').next().expect("a name");
            assert_eq!(service.build.get("target").map(String::as_str), Some(binary), "{compose:?}: {name}");
            let dockerfile = service.build.get("dockerfile").map(String::as_str).unwrap_or_default();
            assert!(dockerfile.ends_with("deploy/docker/Dockerfile.source"), "{compose:?}: {name} builds {dockerfile}");
        }
    }
}
