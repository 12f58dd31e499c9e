//! Who may send which command over MQTT.
//!
//! Credentials travel in the command's JSON (`user`, `password`), checked against `[[users]]` (argon2 PHC
//! strings), because a broker's own authentication tells Vigil nothing about which person pressed the button
//! on an integrator's screen. The broker connection must therefore be private: TLS to an external broker, and a
//! broker ACL that lets only the integration accounts publish on `cmd/#` and read `reply/#`
//! (`docs/mqtt-api.md`). Roles: `viewer` may send nothing; `nurse` may acknowledge, pause and resume audio and
//! run sessions; `admin` may also set a baseline by hand (it moves the rise-from-baseline alarm limits).
//!
//! Demo only: with `dashboard.demo_actions_without_sign_in`, the embedded broker and a loopback `mqtt.host`, a
//! command without credentials runs as user `demo` with the nurse role; Vigil logs this at start.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::{Config, MqttMode, Role};
use crate::event::Command;

/// Why a command was not authorised. The text goes into the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `[[users]]` are configured, so nobody can be authorised.
    #[error("MQTT commands are disabled: no [[users]] are configured")]
    NoUsers,
    /// `user` or `password` missing.
    #[error("missing 'user' or 'password'")]
    MissingCredentials,
    /// Unknown user or wrong password (deliberately not saying which).
    #[error("unknown user or wrong password")]
    BadCredentials,
    /// Authenticated, but the role does not allow the command.
    #[error("user '{user}' has role {role:?}, '{command}' needs role {needed:?}")]
    Forbidden {
        /// User.
        user: String,
        /// Their role.
        role: Role,
        /// The command.
        command: &'static str,
        /// The role needed.
        needed: Role,
    },
}

/// The command's name as on the wire.
pub fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Acknowledge { .. } => "acknowledge",
        Command::PauseAudio { .. } => "pause_audio",
        Command::ResumeAudio => "resume_audio",
        Command::SessionStart { .. } => "session_start",
        Command::InfusionStart => "infusion_start",
        Command::InfusionStop => "infusion_stop",
        Command::SessionEnd => "session_end",
        Command::SetBaseline { .. } => "set_baseline",
        Command::SetLimit { .. } => "set_limit",
    }
}

/// The least role that may send a command.
pub fn required_role(cmd: &Command) -> Role {
    match cmd {
        Command::SetBaseline { .. } | Command::SetLimit { .. } => Role::Admin,
        _ => Role::Nurse,
    }
}

/// Checks credentials and roles.
#[derive(Debug, Clone)]
pub struct Authorizer {
    users: HashMap<String, (Role, String)>,
    demo: bool,
}

fn dummy_hash() -> &'static str {
    // Verifying unknown users against a real hash keeps the answer time the same as for a wrong password.
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::encode_b64(b"vigil-dummy-salt").unwrap_or_else(|_| unreachable_salt());
        Argon2::default().hash_password(b"not a password", &salt).map(|h| h.to_string()).unwrap_or_default()
    })
}

fn unreachable_salt() -> SaltString {
    SaltString::from_b64("dmlnaWxkdW1teXNhbHQ").expect("a valid constant salt")
}

impl Authorizer {
    /// From `[[users]]`, plus the demo rule (see the module documentation).
    pub fn from_config(config: &Config) -> Authorizer {
        let users = config.users.iter().map(|u| (u.name.clone(), (u.role, u.password_hash.clone()))).collect();
        let loopback = config.mqtt.host == "localhost"
            || config.mqtt.host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false);
        let demo = config.dashboard.demo_actions_without_sign_in && config.mqtt.mode == MqttMode::Embedded && loopback;
        Authorizer { users, demo }
    }

    /// Whether commands without credentials run as `demo`.
    pub fn demo(&self) -> bool {
        self.demo
    }

    /// The actor name if `user`/`password` may send `cmd`. Slow (argon2): call from a blocking thread.
    pub fn authorize(&self, user: Option<&str>, password: Option<&str>, cmd: &Command) -> Result<String, AuthError> {
        let (user, password) = match (user, password) {
            (None, None) if self.demo => return Ok("demo".into()),
            (Some(u), Some(p)) => (u, p),
            _ if self.users.is_empty() => return Err(AuthError::NoUsers),
            _ => return Err(AuthError::MissingCredentials),
        };
        if self.users.is_empty() {
            return Err(AuthError::NoUsers);
        }
        let (role, hash) = match self.users.get(user) {
            Some((role, hash)) => (Some(*role), hash.as_str()),
            None => (None, dummy_hash()),
        };
        let verified = PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        let role = match (verified, role) {
            (true, Some(role)) => role,
            _ => return Err(AuthError::BadCredentials),
        };
        let needed = required_role(cmd);
        if role < needed {
            return Err(AuthError::Forbidden { user: user.into(), role, command: command_name(cmd), needed });
        }
        Ok(user.into())
    }
}

/// An argon2 PHC string for a password (what `[[users]].password_hash` holds).
pub fn hash_password(password: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    let salt = SaltString::encode_b64(&bytes).unwrap_or_else(|_| unreachable_salt());
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, UserConfig};

    fn authorizer(users: Vec<UserConfig>, demo: bool) -> Authorizer {
        let mut config = Config::parse(
            "[site]\nname = \"s\"\nward = \"w\"\n[dashboard]\ndemo_actions_without_sign_in = true\n",
            "test",
            std::path::Path::new("."),
        )
        .unwrap();
        config.users = users;
        if !demo {
            config.mqtt.host = "10.0.0.5".into();
        }
        Authorizer::from_config(&config)
    }

    #[test]
    fn roles_decide_who_may_send_what_and_wrong_passwords_do_not_say_which_part_was_wrong() {
        let hash = hash_password("pw");
        let user = |name: &str, role| UserConfig { name: name.into(), role, password_hash: hash.clone() };
        let a = authorizer(vec![user("v", Role::Viewer), user("n", Role::Nurse), user("a", Role::Admin)], false);
        let ack = Command::Acknowledge { alarm_id: None };
        let baseline = Command::SetBaseline { sys: 120.0, dia: 80.0 };
        assert_eq!(a.authorize(Some("n"), Some("pw"), &ack), Ok("n".into()));
        assert_eq!(a.authorize(Some("a"), Some("pw"), &baseline), Ok("a".into()));
        assert!(matches!(a.authorize(Some("n"), Some("pw"), &baseline), Err(AuthError::Forbidden { .. })));
        assert!(matches!(a.authorize(Some("v"), Some("pw"), &ack), Err(AuthError::Forbidden { .. })));
        assert_eq!(a.authorize(Some("n"), Some("nope"), &ack), Err(AuthError::BadCredentials));
        assert_eq!(a.authorize(Some("x"), Some("pw"), &ack), Err(AuthError::BadCredentials));
        assert_eq!(a.authorize(None, None, &ack), Err(AuthError::MissingCredentials));
    }

    #[test]
    fn without_users_commands_are_disabled_except_in_the_loopback_embedded_demo() {
        let ack = Command::Acknowledge { alarm_id: None };
        assert_eq!(authorizer(Vec::new(), false).authorize(None, None, &ack), Err(AuthError::NoUsers));
        let demo = authorizer(Vec::new(), true);
        assert!(demo.demo());
        assert_eq!(demo.authorize(None, None, &ack), Ok("demo".into()));
    }
}
