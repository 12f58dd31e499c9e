//! Configuration: every shipped example is valid, and every kind of mistake is reported with its key path.

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil::config::Config;

fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

fn shipped_configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files = vec![root.join("vigil.toml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_config_passes_check_config_and_lists_its_beds() {
    let files = shipped_configs();
    assert!(files.len() >= 4, "expected the default and at least three examples, found {files:?}");
    for file in files {
        let out = vigil().arg("check-config").arg(&file).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {}{}", file.display(), stdout, String::from_utf8_lossy(&out.stderr));
        let config = Config::load(&file).unwrap();
        for bed in &config.beds {
            assert!(
                stdout.contains(&format!("bed {} ", bed.id)),
                "{} does not list {}: {stdout}",
                file.display(),
                bed.id
            );
        }
    }
}

#[test]
fn the_embedded_default_is_the_shipped_default_with_six_simulated_chairs() {
    let config = Config::embedded_default();
    assert_eq!(config.beds.len(), 6);
    assert!(config.beds.iter().all(|b| b.sources.iter().all(|s| s.kind == vigil::config::SourceKind::Simulated)));
    let out = vigil().arg("print-default-config").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), std::fs::read_to_string("config/vigil.toml").unwrap());
}

#[test]
fn the_shipped_config_allows_no_action_without_sign_in_and_the_built_in_demo_does_on_loopback_only() {
    let shipped = Config::embedded_default();
    assert!(!shipped.dashboard.demo_actions_without_sign_in, "config/vigil.toml is a production starting point");
    assert!(!vigil::mqtt::broker::is_loopback_demo(&shipped));
    let demo = Config::demo();
    assert!(vigil::mqtt::broker::is_loopback_demo(&demo));
    assert_eq!(demo.dashboard.listen, "127.0.0.1:8080");
    assert_eq!(demo.mqtt.host, "127.0.0.1");
    assert_eq!(demo.beds.len(), 6);
}

const SITE: &str = "[site]\nname = \"a\"\nward = \"b\"\n";

fn bed(id: &str, source: &str) -> String {
    format!("[[beds]]\nid = \"{id}\"\n[[beds.sources]]\n{source}\n")
}

const MASIMO: &str = "kind = \"serial\"\ndevice = \"masimo\"\npath = \"/dev/ttyUSB0\"";

/// (what is wrong, the TOML, the key path the error must name, a word the reason must contain)
/// A udp IntelliVue source's first lines.
const UDP: &str = "kind = \"udp\"\ndevice = \"intellivue\"\n";

fn broken_configs() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        ("misspelt key", format!("{SITE}[mqtt]\nbrokr = \"x\"\n"), "mqtt.brokr", "unknown field"),
        ("missing site", "[mqtt]\nport = 1883\n".into(), "site", "missing"),
        ("missing ward", "[site]\nname = \"a\"\n".into(), "site.ward", "missing field"),
        ("syntax error", "[site\n".into(), "(syntax)", "line 1"),
        (
            "non-standard baud on the third bed",
            format!(
                "{SITE}{}{}{}",
                bed("c1", MASIMO),
                bed("c2", "kind = \"serial\"\ndevice = \"nonin\"\npath = \"/dev/ttyUSB1\""),
                bed("c3", &format!("{MASIMO}\nbaud = 9601"))
            ),
            "beds[2].sources[0].baud",
            "9601 is not a standard rate",
        ),
        (
            "an s5 interval on a masimo",
            format!("{SITE}{}", bed("c1", &format!("{MASIMO}\ns5_interval = \"10s\""))),
            "beds[0].sources[0].s5_interval",
            "applies to device = \"s5\" only",
        ),
        (
            "an s5 interval that is not one of the three",
            format!(
                "{SITE}{}",
                bed("c1", "kind = \"tcp\"\ndevice = \"s5\"\naddress = \"h:4001\"\ns5_interval = \"30s\"")
            ),
            "beds[0].sources[0].s5_interval",
            "unknown variant",
        ),
        (
            "tcp source without an address",
            format!("{SITE}{}", bed("c1", "kind = \"tcp\"\ndevice = \"s5\"")),
            "beds[0].sources[0].address",
            "is required for kind = \"tcp\"",
        ),
        (
            "tcp address without a port",
            format!("{SITE}{}", bed("c1", "kind = \"tcp\"\ndevice = \"s5\"\naddress = \"10.1.2.40\"")),
            "beds[0].sources[0].address",
            "is not host:port",
        ),
        (
            "udp source with an address that is not host:port",
            format!("{SITE}{}", bed("c1", "kind = \"udp\"\ndevice = \"intellivue\"\naddress = \"10.1.2.50\"")),
            "beds[0].sources[0].address",
            "is the monitor's host:port",
        ),
        (
            "udp source for a device that has no LAN interface here",
            format!("{SITE}{}", bed("c1", "kind = \"udp\"\ndevice = \"masimo\"\naddress = \"h:24105\"")),
            "beds[0].sources[0].device",
            "the IntelliVue LAN interface",
        ),
        (
            "a simulated intellivue (it only speaks when associated)",
            format!("{SITE}{}", bed("c1", "kind = \"simulated\"\ndevice = \"intellivue\"")),
            "beds[0].sources[0].device",
            "no intellivue personality",
        ),
        (
            "serial settings on a tcp source",
            format!("{SITE}{}", bed("c1", "kind = \"tcp\"\ndevice = \"s5\"\naddress = \"h:4001\"\nbaud = 19200")),
            "beds[0].sources[0].baud",
            "the device server's own settings",
        ),
        (
            "baud of the wrong type",
            format!("{SITE}{}", bed("c1", &format!("{MASIMO}\nbaud = \"fast\""))),
            "beds[0].sources[0].baud",
            "invalid type",
        ),
        (
            "unknown source kind",
            format!("{SITE}{}", bed("c1", "kind = \"usb\"\ndevice = \"masimo\"")),
            "beds[0].sources[0].kind",
            "unknown variant",
        ),
        (
            "unknown device",
            format!("{SITE}{}", bed("c1", "kind = \"serial\"\ndevice = \"philips\"\npath = \"/dev/x\"")),
            "beds[0].sources[0].device",
            "unknown variant",
        ),
        (
            "serial without a path",
            format!("{SITE}{}", bed("c1", "kind = \"serial\"\ndevice = \"masimo\"")),
            "beds[0].sources[0].path",
            "required",
        ),
        (
            "a simulated key on a serial source",
            format!("{SITE}{}", bed("c1", &format!("{MASIMO}\nscenario = \"desaturation\""))),
            "beds[0].sources[0].scenario",
            "does not apply",
        ),
        (
            "nine data bits",
            format!("{SITE}{}", bed("c1", &format!("{MASIMO}\ndata_bits = 9"))),
            "beds[0].sources[0].data_bits",
            "9",
        ),
        (
            "duplicate bed id",
            format!(
                "{SITE}{}{}",
                bed("c1", MASIMO),
                bed("c1", "kind = \"serial\"\ndevice = \"masimo\"\npath = \"/dev/ttyUSB1\"")
            ),
            "beds[1].id",
            "another bed",
        ),
        (
            "mllp source without an [mllp] section",
            format!("{SITE}{}", bed("c1", "kind = \"mllp\"\ndevice = \"hl7\"\ndevice_id = \"00A0370098007A80\"")),
            "beds[0].sources[0].kind",
            "[mllp]",
        ),
        (
            "mllp source without a device id",
            format!("{SITE}[mllp]\n{}", bed("c1", "kind = \"mllp\"\ndevice = \"hl7\"")),
            "beds[0].sources[0].device_id",
            "required",
        ),
        (
            "mllp carrying masimo",
            format!("{SITE}[mllp]\n{}", bed("c1", "kind = \"mllp\"\ndevice = \"masimo\"\ndevice_id = \"x\"")),
            "beds[0].sources[0].device",
            "HL7",
        ),
        (
            "unknown scenario",
            format!("{SITE}{}", bed("c1", "kind = \"simulated\"\ndevice = \"masimo\"\nscenario = \"nope\"")),
            "beds[0].sources[0].scenario",
            "unknown scenario",
        ),
        (
            "absurd speed",
            format!("{SITE}{}", bed("c1", "kind = \"simulated\"\ndevice = \"masimo\"\nspeed = -1.0")),
            "beds[0].sources[0].speed",
            "between",
        ),
        (
            "dashboard address without a port",
            format!("{SITE}[dashboard]\nlisten = \"localhost\"\n"),
            "dashboard.listen",
            "not an address",
        ),
        ("slash in a topic segment", "[site]\nname = \"a/b\"\nward = \"w\"\n".into(), "site.name", "topic segment"),
        (
            "wildcard in the topic prefix",
            format!("{SITE}[mqtt]\ntopic_prefix = \"vigil/#\"\n"),
            "mqtt.topic_prefix",
            "wildcard",
        ),
        (
            "TLS on the embedded broker",
            format!("{SITE}[mqtt]\nmode = \"embedded\"\ntls = {{ ca_file = \"ca.pem\" }}\n"),
            "mqtt.tls",
            "external",
        ),
        (
            "plain-text password",
            format!("{SITE}[[users]]\nname = \"n\"\nrole = \"nurse\"\npassword_hash = \"secret\"\n"),
            "users[0].password_hash",
            "argon2",
        ),
        (
            "unknown role",
            format!("{SITE}[[users]]\nname = \"n\"\nrole = \"boss\"\npassword_hash = \"$argon2id$x\"\n"),
            "users[0].role",
            "unknown variant",
        ),
        (
            "a word in the MLLP allow-list",
            format!("{SITE}[mllp]\nallow = [\"10.1.2.0/24\", \"ward-pcs\"]\n"),
            "mllp.allow[1]",
            "CIDR block",
        ),
        (
            "a user name with a slash (it is a command topic segment)",
            format!("{SITE}[[users]]\nname = \"n/x\"\nrole = \"nurse\"\npassword_hash = \"$argon2id$x\"\n"),
            "users[0].name",
            "without '/'",
        ),
        (
            "a udp source with an address and a discovery filter",
            format!("{SITE}{}", bed("c1", &format!("{UDP}address = \"10.1.2.50:24105\"\nmonitor_ip = \"10.1.2.50\""))),
            "beds[0].sources[0].monitor_ip",
            "does not apply",
        ),
        (
            "a discovery listen address that is not ip:port",
            format!("{SITE}{}", bed("c1", &format!("{UDP}discover_listen = \"24005\""))),
            "beds[0].sources[0].discover_listen",
            "not ip:port",
        ),
        (
            "unknown profile",
            format!("{SITE}[[beds]]\nid = \"c1\"\nprofile = \"no-such-profile\"\n"),
            "beds[0].profile",
            "no-such-profile",
        ),
        (
            "an acm target without its table",
            format!(
                "{SITE}{}[[notify.targets]]\nname = \"am\"\nkind = \"acm\"\npriorities = [\"high\"]\n",
                bed("c1", MASIMO)
            ),
            "notify.targets[0].acm",
            "needs its table",
        ),
        (
            "an acm target with a delimiter in its point of care",
            format!(
                "{SITE}{}[[notify.targets]]\nname = \"am\"\nkind = \"acm\"\npriorities = [\"high\"]\n\
                 acm = {{ address = \"10.0.0.5:2575\", point_of_care = \"ward|5\" }}\n",
                bed("c1", MASIMO)
            ),
            "notify.targets[0].acm.point_of_care",
            "HL7 delimiter",
        ),
        (
            "an acm target with a webhook key",
            format!(
                "{SITE}{}[[notify.targets]]\nname = \"am\"\nkind = \"acm\"\npriorities = [\"high\"]\n\
                 url = \"http://h/x\"\nacm = {{ address = \"10.0.0.5:2575\" }}\n",
                bed("c1", MASIMO)
            ),
            "notify.targets[0].url",
            "does not apply to kind = \"acm\"",
        ),
        (
            "a webhook with an acm table",
            format!(
                "{SITE}{}[[notify.targets]]\nname = \"w\"\nkind = \"webhook\"\npriorities = [\"high\"]\n\
                 url = \"http://h/x\"\nacm = {{ address = \"10.0.0.5:2575\" }}\n",
                bed("c1", MASIMO)
            ),
            "notify.targets[0].acm",
            "does not apply to kind = \"webhook\"",
        ),
    ]
}

#[test]
fn each_broken_config_fails_with_its_key_path_and_reason() {
    for (what, toml, path, reason) in broken_configs() {
        let err = match Config::parse(&toml, "broken.toml", Path::new(".")) {
            Ok(_) => panic!("{what}: accepted\n{toml}"),
            Err(e) => e,
        };
        let text = err.to_string();
        assert_eq!(err.path(), path, "{what}: {text}");
        assert!(text.starts_with("broken.toml: "), "{what}: error does not name the file: {text}");
        assert!(text.contains(reason), "{what}: reason lacks '{reason}': {text}");
    }
}

#[test]
fn check_config_exits_64_naming_the_file_and_the_misspelt_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, format!("{SITE}[mqtt]\nbrokr = \"x\"\n")).unwrap();
    let out = vigil().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("mqtt.brokr"), "{stderr}");
}

#[test]
fn run_with_a_missing_config_file_exits_64() {
    let out = vigil().args(["run", "--config", "/nonexistent/vigil.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `vigil check-config` on `text` (written into `dir`), checks it succeeds (warnings never stop the daemon)
/// and prints every `expected` line; returns its output.
fn check_config_warns(dir: &Path, text: &str, expected: &[&str]) -> String {
    let file = dir.join("checked.toml");
    std::fs::write(&file, text).unwrap();
    let out = vigil().arg("check-config").arg(&file).output().unwrap();
    assert!(out.status.success(), "warnings do not stop the daemon");
    let stdout = String::from_utf8(out.stdout).unwrap();
    for e in expected {
        assert!(stdout.contains(e), "missing '{e}' in:\n{stdout}");
    }
    stdout
}

#[test]
fn check_config_warns_about_weak_and_example_hashes_plaintext_credentials_and_open_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let weak = "$argon2id$v=19$m=64,t=1,p=1$dmlnaWwtdGVzdC1zYWx0IQ$jvb2dT3Q9nHzM7ctUy5mC1Sz2Y9KLbYq0vDFVfW0pVU";
    let example = vigil::config::EXAMPLE_HASHES[0];
    let text = format!(
        "{SITE}[mqtt]\nmode = \"external\"\nhost = \"10.0.0.12\"\nusername = \"vigil\"\npassword = \"pw\"\n\
         [dashboard]\nlisten = \"0.0.0.0:8080\"\n[mllp]\nlisten = \"0.0.0.0:2575\"\n\
         [[users]]\nname = \"a\"\nrole = \"nurse\"\npassword_hash = \"{weak}\"\n\
         [[users]]\nname = \"b\"\nrole = \"nurse\"\npassword_hash = \"{example}\"\n"
    );
    let stdout = check_config_warns(
        dir.path(),
        &text,
        &[
            "warning: users[0].password_hash: argon2 parameters m=64 KiB, t=1",
            "warning: users[1].password_hash: is the documented example hash",
            "warning: mqtt.tls: Vigil's MQTT password goes to 10.0.0.12 in plaintext",
            "warning: dashboard.allowed_hosts:",
            "warning: mllp.allow: MLLP listens on 0.0.0.0:2575 without an allow-list",
        ],
    );
    assert!(!stdout.contains("pw\""), "the password is never printed");
    let shipped = vigil().arg("check-config").arg("config/vigil.toml").output().unwrap();
    assert!(!String::from_utf8(shipped.stdout).unwrap().contains("warning:"), "the shipped config is clean");
}

#[test]
fn the_mqtt_password_may_come_from_a_file_or_the_environment_and_debug_output_hides_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mqtt.pw"), "from-a-file\n").unwrap();
    let text = format!("{SITE}[mqtt]\nusername = \"vigil\"\npassword_file = \"mqtt.pw\"\n");
    let c = Config::parse(&text, "t.toml", dir.path()).unwrap();
    assert_eq!(c.mqtt.password.as_deref(), Some("from-a-file"));
    assert!(!format!("{:?}", c.mqtt).contains("from-a-file"), "Debug redacts the password");
    std::env::set_var("VIGIL_TEST_MQTT_PW", "from-the-env");
    let text = format!("{SITE}[mqtt]\nusername = \"vigil\"\npassword_env = \"VIGIL_TEST_MQTT_PW\"\n");
    assert_eq!(Config::parse(&text, "t.toml", dir.path()).unwrap().mqtt.password.as_deref(), Some("from-the-env"));
    let missing = format!("{SITE}[mqtt]\nusername = \"vigil\"\npassword_file = \"nope.pw\"\n");
    let err = Config::parse(&missing, "t.toml", dir.path()).unwrap_err();
    assert_eq!(err.path(), "mqtt.password_file");
    let both = format!("{SITE}[mqtt]\nusername = \"vigil\"\npassword = \"x\"\npassword_env = \"VIGIL_TEST_MQTT_PW\"\n");
    assert_eq!(Config::parse(&both, "t.toml", dir.path()).unwrap_err().path(), "mqtt.password");
}

#[test]
fn check_config_explains_a_parity_baud_or_flow_control_the_chosen_device_does_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{SITE}{}{}{}{}",
        bed("c1", "kind = \"serial\"\ndevice = \"s5\"\npath = \"/dev/ttyUSB0\"\nparity = \"none\""),
        bed(
            "c2",
            "kind = \"serial\"\ndevice = \"s5\"\npath = \"/dev/ttyUSB1\"\nbaud = 115200\nflow_control = \"none\""
        ),
        bed("c3", &format!("{MASIMO}\nparity = \"even\"")),
        bed("c4", "kind = \"serial\"\ndevice = \"s5\"\npath = \"/dev/ttyUSB3\"\nbaud = 9600"),
    );
    let stdout = check_config_warns(
        dir.path(),
        &text,
        &[
            "warning: beds[0].sources[0].parity: parity = \"none\", but the S/5 computer interface runs at 19200 (or 9600) 8E1",
            "warning: beds[1].sources[0].baud: 115200 is not a rate device = \"s5\" uses (19200 or 9600)",
            "warning: beds[1].sources[0].flow_control: flow_control = \"none\", but the S/5",
            "warning: beds[2].sources[0].parity: parity = \"even\", but Masimo serial ASCII 1 runs at 9600 8N1",
        ],
    );
    assert!(!stdout.contains("beds[3]"), "an S/5 set to 9600 is one of its rates: {stdout}");
    assert!(stdout.contains("source serial s5: /dev/ttyUSB0 at 19200 baud"), "the S/5 default rate: {stdout}");
}
