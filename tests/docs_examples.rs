//! Documented examples held against the code: the alarm payload in `docs/mqtt-api.md`, the configuration snippet
//! in `README.md`, the configuration fragments of `docs/devices.md`, `docs/notifications.md` and `docs/acm.md`, the
//! shipped configuration files, and the commands the operations guide tells people to run.

mod alarm_support;

use alarm_support::{cat, every_second, oximeter, run};
use serde_json::Value;
use vigil::vitals::Parameter;

/// The first fenced block of `lang` after the line containing `heading` in `file`.
fn block_after(file: &str, heading: &str, lang: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let from = text.find(heading).unwrap_or_else(|| panic!("{file}: no '{heading}'"));
    let fence = format!("```{lang}\n");
    let start = text[from..].find(&fence).map(|i| from + i + fence.len()).unwrap();
    let end = text[start..].find("```").map(|i| start + i).unwrap();
    text[start..end].to_owned()
}

/// Every fenced ```toml block of `file`, with the line it starts on.
fn toml_blocks(file: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match open.as_mut() {
            None if line.trim_end() == "```toml" => open = Some((n + 1, String::new())),
            None => {}
            Some(_) if line.starts_with("```") => blocks.extend(open.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(open.is_none(), "{file}: a ```toml block is not closed");
    blocks
}

/// `block` with its commented-out settings (`# key = value`, the optional keys a fragment names) switched on.
fn uncommented(block: &str) -> String {
    let setting = |s: &str| {
        s.split_once(" = ")
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    block
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if setting(rest) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A documented configuration fragment (from `file`, starting at `line`) as a whole Vigil configuration: a site,
/// MQTT off, a store in `dir`, beds `chair-1` and `chair-2`, then the fragment (a `[[beds.sources]]` entry belongs
/// to `chair-2`).
fn parse_fragment(file: &str, line: usize, fragment: &str, dir: &std::path::Path) -> vigil::config::Config {
    let text = format!(
        "[site]\nname = \"doc-site\"\nward = \"doc-ward\"\n[mqtt]\nmode = \"disabled\"\n[store]\npath = \"{}\"\n\
         [[beds]]\nid = \"chair-1\"\n[[beds]]\nid = \"chair-2\"\n{fragment}",
        dir.join("vigil.db").display()
    );
    vigil::config::Config::parse(&text, file, dir).unwrap_or_else(|e| {
        panic!("{file}: the ```toml block at line {line} does not parse as Vigil config: {e}\n{fragment}")
    })
}

#[test]
fn every_toml_fragment_in_the_devices_notifications_and_acm_docs_parses_with_its_optional_keys_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for file in ["docs/devices.md", "docs/notifications.md", "docs/acm.md"] {
        let blocks = toml_blocks(file);
        assert!(!blocks.is_empty(), "{file} has no ```toml block: is this test still needed?");
        for (line, block) in blocks {
            // The secret files a fragment names (`bearer_token_file = "ntfy.token"`) exist next to its config.
            for value in block.lines().filter_map(|l| l.split_once("_file = \"")).map(|(_, v)| v) {
                let name = value.split('"').next().unwrap();
                std::fs::write(dir.path().join(name), "placeholder-secret\n").unwrap();
            }
            let config = parse_fragment(file, line, &block, dir.path());
            let with_optional = uncommented(&block);
            if with_optional != block {
                parse_fragment(file, line, &with_optional, dir.path());
            }
            // The fragment took effect (it was not swallowed by a table the wrapper opened).
            let sources = config.beds.iter().map(|b| b.sources.len()).sum::<usize>();
            let targets = config.notify.targets.len();
            assert!(sources + targets > 0, "{file}:{line}: the fragment configured nothing");
            assert_eq!(sources, block.matches("[[beds.sources]]").count(), "{file}:{line}");
            assert_eq!(targets, block.matches("[[notify.targets]]").count(), "{file}:{line}");
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} fragments found");
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

#[test]
fn the_alarm_payload_example_in_mqtt_api_md_is_what_the_engine_publishes_for_a_desaturation() {
    let doc: Value = serde_json::from_str(&block_after("docs/mqtt-api.md", "### `bed/{bed}/alarm`", "json")).unwrap();
    // A steady oximeter, then SpO2 falls to 85 %: the engine raises spo2_low.
    let steps = cat(vec![
        oximeter(0, 60),
        every_second(Parameter::Spo2, 60, 120, |_| 85.0),
        every_second(Parameter::Pr, 60, 120, |_| 70.0),
    ]);
    let events = run(&steps, 120);
    let start = events
        .iter()
        .find(|e| e.condition == "spo2_low" && e.phase == vigil::event::AlarmPhase::Start)
        .expect("spo2_low raised");
    let real = vigil::mqtt::payload::alarm(start);
    assert_eq!(keys(&doc), keys(&real), "the example's fields are the payload's fields");
    assert_eq!(keys(&doc["evidence"]), keys(&real["evidence"]), "the example's evidence keys are the engine's");
    assert_eq!(keys(&doc["parameter"]), keys(&real["parameter"]));
    for field in ["kind", "condition", "priority", "phase", "state", "parameter", "message"] {
        assert_eq!(doc[field], real[field], "{field}");
    }
    assert_eq!(doc["evidence"]["rule"], real["evidence"]["rule"]);
    // alarm_id is `{bed}-{bed_seq of its start event}`, as the engine makes it.
    assert_eq!(real["alarm_id"], format!("{}-{}", real["bed"].as_str().unwrap(), real["bed_seq"]));
    assert_eq!(doc["alarm_id"], format!("{}-{}", doc["bed"].as_str().unwrap(), doc["bed_seq"]));
    // The AsyncAPI document shows the same example.
    let asyncapi = std::fs::read_to_string("docs/asyncapi.yaml").unwrap();
    assert!(asyncapi.contains(&format!("alarm_id: {}", doc["alarm_id"].as_str().unwrap())));
    assert!(asyncapi.contains("evidence: {rule: deep_drop, band: high, hysteresis: 1.0, family: desaturation"));
}

#[test]
fn the_readme_configuration_snippet_parses_once_its_placeholders_are_filled_in() {
    let snippet = block_after("README.md", "## Configuration", "toml");
    let hash = vigil::auth::hash_password("nurse-password").unwrap();
    let text = snippet.replace("\"$argon2id$...\"", &format!("\"{hash}\""));
    let dir = tempfile::tempdir().unwrap();
    let config = vigil::config::Config::parse(&text, "README.md", dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.beds[0].id, "chair-1");
    assert_eq!(config.mllp.as_ref().unwrap().allow.len(), 2);
}

#[test]
fn the_packaged_configuration_is_valid_and_a_production_starting_point() {
    let config = vigil::config::Config::load(std::path::Path::new("packaging/vigil.toml")).unwrap();
    assert_eq!(config.store.path, std::path::Path::new("/var/lib/vigil/vigil.db"), "the store is in StateDirectory");
    assert!(!config.dashboard.demo_actions_without_sign_in);
    assert!(config.dashboard.listen.starts_with("127.0.0.1:"));
    assert!(
        config.beds.iter().all(|b| b.sources.iter().all(|s| s.kind != vigil::config::SourceKind::Simulated)),
        "no simulated chairs in the packaged file"
    );
}

#[test]
fn the_commands_in_the_operations_guide_exist_with_the_flags_it_names() {
    // `vigil check-config FILE`, `vigil --log-format json run --config FILE` and `vigil man --out DIR` as the
    // guide and the unit use them.
    let vigil = env!("CARGO_BIN_EXE_vigil");
    let out = std::process::Command::new(vigil).args(["check-config", "packaging/vigil.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let guide = std::fs::read_to_string("docs/operations.md").unwrap();
    assert!(guide.contains("vigil check-config /etc/vigil/vigil.toml"));
    let unit = std::fs::read_to_string("packaging/vigil.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/vigil run --config /etc/vigil/vigil.toml"));
    let out = std::process::Command::new(vigil).args(["--log-format", "json", "run", "--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

#[test]
fn the_packaged_manual_pages_and_completions_are_the_ones_the_binaries_generate_now() {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["man", "--out"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let mut names: Vec<String> = std::fs::read_dir("packaging/man")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vigil") && n != "vigil-sim.1")
        .collect();
    names.sort();
    let mut made: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    made.sort();
    assert_eq!(names, made, "packaging/man/ has exactly the pages of `vigil man` (regenerate it)");
    for name in made.iter().map(String::as_str).chain([
        "completions/vigil.bash",
        "completions/_vigil",
        "completions/vigil.fish",
    ]) {
        let fresh = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let shipped = std::fs::read_to_string(std::path::Path::new("packaging/man").join(name)).unwrap();
        assert!(fresh == shipped, "packaging/man/{name} is stale: run `vigil man --out packaging/man`");
    }
    assert!(std::fs::read_to_string("packaging/man/vigil-run.1").unwrap().contains("\\-\\-config"));
}
