//! Profiles: resolution by name or path, built-in fallback, and errors that name the file, key path and reason.

use vigil::alarm::{Profile, ProfileError};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    let path = dir.join("profiles").join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn both_shipped_profiles_load_and_validate_from_any_directory() {
    let nowhere = std::path::Path::new("/nonexistent");
    let p = Profile::resolve("ketamine-chair", nowhere).unwrap();
    assert_eq!(p.limits.nibp_sys.unwrap().high.unwrap().medium, Some(160.0));
    assert_eq!(p.satseconds.setting, 25);
    let strict = Profile::resolve("ketamine-chair-strict", nowhere).unwrap();
    assert!(!strict.satseconds.enabled);
}

#[test]
fn a_profile_file_under_the_config_directory_wins_over_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let text = vigil::alarm::profile::KETAMINE_CHAIR.replace("setting = 25", "setting = 50");
    write(dir.path(), "ketamine-chair.toml", &text);
    assert_eq!(Profile::resolve("ketamine-chair", dir.path()).unwrap().satseconds.setting, 50);
    let by_path = dir.path().join("profiles/ketamine-chair.toml");
    assert_eq!(Profile::resolve(by_path.to_str().unwrap(), dir.path()).unwrap().satseconds.setting, 50);
}

#[test]
fn errors_name_the_file_the_key_path_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "typo.toml",
            vigil::alarm::profile::KETAMINE_CHAIR.replace("hysteresis = 1\n", "hysteresis = 1\nhysterisis = 2\n"),
            "limits.spo2",
            "hysterisis",
        ),
        (
            "bands.toml",
            vigil::alarm::profile::KETAMINE_CHAIR
                .replace("high = { medium = 120, high = 140 }", "high = { medium = 150, high = 140 }"),
            "limits.hr.high.high",
            "below the medium limit",
        ),
        (
            "nibp.toml",
            vigil::alarm::profile::KETAMINE_CHAIR.replace(
                "high = { medium = 100, high = 110 }\nhysteresis = 5\ndelay_s = 0",
                "high = { medium = 100, high = 110 }\nhysteresis = 5\ndelay_s = 5",
            ),
            "limits.nibp_dia.delay_s",
            "never delayed",
        ),
        (
            "sat.toml",
            vigil::alarm::profile::KETAMINE_CHAIR.replace("setting = 25", "setting = 30"),
            "satseconds.setting",
            "10, 25, 50, 100",
        ),
        (
            "type.toml",
            vigil::alarm::profile::KETAMINE_CHAIR.replace("no_data_s = 10", "no_data_s = \"ten\""),
            "technical.no_data_s",
            "invalid type",
        ),
    ];
    for (file, text, path, reason) in cases {
        let full = write(dir.path(), file, &text);
        let err = Profile::resolve(full.to_str().unwrap(), dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(file) && msg.contains(path) && msg.contains(reason), "{file}: {msg}");
    }
    let err = Profile::resolve("no-such-profile", dir.path()).unwrap_err();
    assert!(matches!(err, ProfileError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-profile.toml"), "{err}");
}

#[test]
fn a_named_profile_is_found_in_the_system_directory_when_the_config_directory_has_none_and_the_config_directory_wins() {
    let config_dir = tempfile::tempdir().unwrap();
    let system = tempfile::tempdir().unwrap();
    let strict = std::fs::read_to_string("config/profiles/ketamine-chair-strict.toml").unwrap();
    let ward = strict.replace("name = \"ketamine-chair-strict\"", "name = \"ward-special\"");
    std::fs::write(system.path().join("ward-special.toml"), &ward).unwrap();
    let found = Profile::resolve_in("ward-special", config_dir.path(), system.path()).unwrap();
    assert_eq!(found.name, "ward-special");
    let mine = ward.replace("name = \"ward-special\"", "name = \"ward-special-local\"");
    write(config_dir.path(), "ward-special.toml", &mine);
    let found = Profile::resolve_in("ward-special", config_dir.path(), system.path()).unwrap();
    assert_eq!(found.name, "ward-special-local", "the copy next to the config file wins");
    let err = Profile::resolve_in("nowhere", config_dir.path(), system.path()).unwrap_err().to_string();
    assert!(err.contains(&system.path().join("nowhere.toml").display().to_string()), "{err}");
}
