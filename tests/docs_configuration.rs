//! `docs/configuration.md` is generated from the doc comments of the configuration structs in `src/config.rs`
//! and `src/notify/config.rs` (`[notify]`, kept beside the notification code):
//! this test regenerates it and fails when the file differs, so every key is documented, no documented key is
//! gone, and each description is the code's own. After changing a config field, run
//! `VIGIL_BLESS=1 cargo test --test docs_configuration` and commit the file.

/// Struct name → the key path its fields live under, in the order the document shows them.
const SECTIONS: [(&str, &str); 17] = [
    ("SiteConfig", "site"),
    ("MqttConfig", "mqtt"),
    ("TlsConfig", "mqtt.tls"),
    ("DashboardConfig", "dashboard"),
    ("ListenerTlsConfig", "dashboard.tls"),
    ("StoreConfig", "store"),
    ("MllpConfig", "mllp"),
    ("ListenerTlsConfig", "mllp.tls"),
    ("MetricsConfig", "metrics"),
    ("SelfTestConfig", "selftest"),
    ("UserConfig", "users[]"),
    ("BedConfig", "beds[]"),
    ("SourceConfig", "beds[].sources[]"),
    ("NotifyConfig", "notify"),
    ("TargetConfig", "notify.targets[]"),
    ("EscalationConfig", "notify.escalation[]"),
    ("StepConfig", "notify.escalation[].steps[]"),
];

/// The files the configuration structs live in, read as one.
fn config_sources() -> String {
    ["src/config.rs", "src/notify/config.rs"].iter().map(|f| std::fs::read_to_string(f).unwrap()).collect()
}

struct Item {
    doc: String,
    fields: Vec<(String, String)>,
}

/// `pub struct NAME { … }` blocks of the file: the struct's doc comment and each serialized field with its doc
/// comment (fields with `#[serde(skip)]` are not keys).
fn structs(src: &str) -> Vec<(String, Item)> {
    let mut out = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    let mut lines = src.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim().to_owned());
            continue;
        }
        if t.starts_with("#[") {
            continue;
        }
        if let Some(name) = t.strip_prefix("pub struct ").and_then(|r| r.strip_suffix(" {")) {
            let mut fields = Vec::new();
            let mut field_doc: Vec<String> = Vec::new();
            let mut skip = false;
            for l in lines.by_ref() {
                let f = l.trim();
                if f == "}" {
                    break;
                }
                if let Some(d) = f.strip_prefix("///") {
                    field_doc.push(d.trim().to_owned());
                } else if f.starts_with("#[serde(skip") {
                    skip = true;
                } else if let Some(rest) = f.strip_prefix("pub ") {
                    let key = rest.split(':').next().unwrap_or_default().to_owned();
                    if !skip {
                        fields.push((key, field_doc.join(" ")));
                    }
                    field_doc.clear();
                    skip = false;
                }
            }
            out.push((name.to_owned(), Item { doc: doc.join(" "), fields }));
        }
        doc.clear();
    }
    out
}

fn generate(src: &str) -> String {
    let all = structs(src);
    let mut md = String::from(
        "# Configuration reference\n\n\
         Generated from the doc comments in `src/config.rs` and `src/notify/config.rs` (`tests/docs_configuration.rs` fails when this file and \
         the code differ; `VIGIL_BLESS=1 cargo test --test docs_configuration` rewrites it). One TOML file, given with \
         `vigil run --config PATH`; `vigil check-config PATH` validates it and names the key path and the reason of \
         any error. Relative paths are resolved against the file's directory. Starting points: `config/vigil.toml` \
         (`vigil print-default-config`), `packaging/vigil.toml` (installed as `/etc/vigil/vigil.toml`) and \
         `config/examples/`. What each setting protects: [security.md](security.md); running it: \
         [operations.md](operations.md).\n",
    );
    for (name, path) in SECTIONS {
        let Some((_, item)) = all.iter().find(|(n, _)| n == name) else {
            panic!("src/config.rs and src/notify/config.rs have no struct {name}");
        };
        let heading =
            if path.ends_with("[]") { format!("[[{}]]", path.trim_end_matches("[]")) } else { format!("[{path}]") };
        md.push_str(&format!("\n## `{heading}`\n\n{}\n\n| key | meaning |\n|---|---|\n", item.doc));
        for (key, doc) in &item.fields {
            md.push_str(&format!("| `{path}.{key}` | {} |\n", doc.replace('|', "\\|")));
        }
    }
    md
}

#[test]
fn docs_configuration_md_is_generated_from_every_config_fields_doc_comment() {
    let src = config_sources();
    let expected = generate(&src);
    let path = "docs/configuration.md";
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == expected,
        "{path} is out of date with src/config.rs: run `VIGIL_BLESS=1 cargo test --test docs_configuration`"
    );
    // Every top-level section of Config is in the document (a new section needs a line in SECTIONS).
    let all = structs(&src);
    let (_, top) = all.iter().find(|(n, _)| n == "Config").unwrap();
    for (key, _) in &top.fields {
        assert!(
            SECTIONS.iter().any(|(_, p)| p.trim_end_matches("[]") == key),
            "config key '{key}' has no section in docs/configuration.md"
        );
    }
}

#[test]
fn every_key_documented_in_configuration_md_is_accepted_by_the_parser_in_its_section() {
    // A key the document names but the parser refused would fail here: each section's keys are set in a TOML
    // file with a value of the right shape for the documented examples, and unknown keys are errors
    // (deny_unknown_fields), so a stale key in the doc would be refused.
    let doc = std::fs::read_to_string("docs/configuration.md").unwrap();
    let keys: Vec<&str> =
        doc.lines().filter_map(|l| l.strip_prefix("| `").and_then(|r| r.split_once('`')).map(|(k, _)| k)).collect();
    assert!(keys.len() > 40, "{keys:?}");
    assert!(keys.contains(&"beds[].sources[].silence_alarm_s"));
    assert!(keys.contains(&"metrics.token_file"));
    for key in keys {
        let (section, field) = key.rsplit_once('.').unwrap();
        let base = "[site]\nname=\"s\"\nward=\"w\"\n[[users]]\nname=\"n\"\nrole=\"nurse\"\npassword_hash=\"x\"\n\
                    [[beds]]\nid=\"b\"\n[[beds.sources]]\nkind=\"simulated\"\ndevice=\"masimo\"\n\
                    [[notify.targets]]\nname=\"t\"\nkind=\"webhook\"\npriorities=[\"high\"]\n\
                    [[notify.escalation]]\npriority=\"high\"\n[[notify.escalation.steps]]\ntarget=\"t\"\nwait_s=1\n";
        let mut doc: toml::Table = toml::from_str(base).unwrap();
        let value = if field == "tls" && section != "mqtt" {
            "v = { cert_file = \"c.pem\", key_file = \"k.pem\" }".to_owned()
        } else {
            format!("v = {}", sample(field))
        };
        let value: toml::Table = toml::from_str(&value).unwrap();
        let mut slot = &mut doc;
        for part in section.split('.') {
            let entry = match part.strip_suffix("[]") {
                Some(array) => match slot.get_mut(array) {
                    Some(toml::Value::Array(items)) => items.get_mut(0).unwrap(),
                    _ => panic!("{key}: no {array} in the minimal file"),
                },
                None => slot.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new())),
            };
            slot = entry.as_table_mut().unwrap();
        }
        slot.insert(field.to_owned(), value["v"].clone());
        let text = toml::to_string(&doc).unwrap();
        if let Err(e) = vigil::config::Config::parse(&text, "doc.toml", std::path::Path::new(".")) {
            let e = e.to_string();
            assert!(!e.contains("unknown field"), "{key} is documented but unknown to the parser: {e}\n{text}");
        }
    }
}

/// A value of a plausible shape for a key (the parser may still refuse it for range or combination reasons;
/// the test only asks that the key itself is known).
fn sample(field: &str) -> &'static str {
    match field {
        "failover" | "allow" | "allowed_hosts" | "sources" => "[]",
        "tls" => "{ ca_file = \"ca.pem\" }",
        "port" | "baud" | "retention_days" | "keep_alive_s" | "seed" | "patient" | "data_bits" | "stop_bits"
        | "max_message_bytes" | "idle_timeout_s" | "max_connections" | "silence_alarm_s" | "ack_link_ttl_s"
        | "timeout_s" | "wait_s" => "1",
        "speed" => "1.0",
        "read_only_without_sign_in" | "demo_actions_without_sign_in" | "nonin_select_format" => "true",
        _ => "\"x\"",
    }
}
