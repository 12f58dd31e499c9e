//! Who may send which command over MQTT.
//!
//! Commands carry no password. A command's actor is the broker account it came from: nurses and admins publish on
//! `{base}/cmd/{bed}/{their user name}`, and the broker pins that topic to the signed-in account, so the last
//! topic segment *is* the authenticated identity. On the embedded broker Vigil's own gate signs clients in with
//! their `[[users]]` name and password (the same argon2 hashes as the dashboard) and enforces this
//! (`super::gate`); on an external broker its ACL must (`pattern write {base}/cmd/+/%u`, see `docs/mqtt-api.md`
//! and `vigil mosquitto-acl`). Roles: `viewer` may send nothing; `nurse` may acknowledge, pause and resume audio,
//! run sessions and enter baselines; `admin` may also override limits (`crate::auth::required_role`, the rule the
//! dashboard applies too).
//!
//! Demo only: with `dashboard.demo_actions_without_sign_in`, the embedded broker and a loopback `mqtt.host`,
//! anonymous clients may connect and a command on `{base}/cmd/{bed}` runs as user `demo` with the nurse role;
//! Vigil logs this at start.

use crate::config::{Config, Role, UserConfig};
use crate::event::Command;

/// Why a command was not authorised. The text goes into the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `[[users]]` are configured, so nobody can be authorised.
    #[error("MQTT commands are disabled: no [[users]] are configured")]
    NoUsers,
    /// The command came on `cmd/{bed}`, which names no sender, outside the loopback demo.
    #[error("commands go to cmd/{{bed}}/{{your user name}}, published while signed in to the broker as that user")]
    NoSender,
    /// The topic names a user that is not in `[[users]]`.
    #[error("'{0}' is not a configured user")]
    UnknownUser(String),
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
        Command::SelfTest => "self_test",
        Command::SelfTestResult { .. } => "self_test_result",
    }
}

/// Checks credentials and roles.
#[derive(Debug, Clone)]
pub struct Authorizer {
    users: Vec<UserConfig>,
    demo: bool,
}

impl Authorizer {
    /// From `[[users]]`, plus the demo rule (see the module documentation).
    pub fn from_config(config: &Config) -> Authorizer {
        let users = config.users.clone();
        Authorizer { users, demo: super::broker::is_loopback_demo(config) }
    }

    /// Whether commands on `cmd/{bed}` (no sender) run as `demo`.
    pub fn demo(&self) -> bool {
        self.demo
    }

    /// The actor if the command may be sent by `sender`, the user the command topic names (`None` for
    /// `cmd/{bed}`). No password: the broker authenticated the sender.
    pub fn authorize(&self, sender: Option<&str>, cmd: &Command) -> Result<String, AuthError> {
        let user = match sender {
            None if self.demo => return Ok("demo".into()),
            _ if self.users.is_empty() => return Err(AuthError::NoUsers),
            None => return Err(AuthError::NoSender),
            Some(u) => u,
        };
        let Some(found) = self.users.iter().find(|u| u.name == user) else {
            return Err(AuthError::UnknownUser(user.chars().take(64).collect()));
        };
        let needed = crate::auth::required_role(cmd);
        if found.role < needed {
            return Err(AuthError::Forbidden {
                user: user.into(),
                role: found.role,
                command: command_name(cmd),
                needed,
            });
        }
        Ok(user.into())
    }
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
    fn roles_decide_who_may_send_what_and_the_sender_is_the_topic_user() {
        let user = |name: &str, role| UserConfig {
            name: name.into(),
            role,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        };
        let a = authorizer(vec![user("v", Role::Viewer), user("n", Role::Nurse), user("a", Role::Admin)], false);
        let ack = Command::Acknowledge { alarm_id: None };
        let baseline = Command::SetBaseline { sys: 120.0, dia: 80.0 };
        assert_eq!(a.authorize(Some("n"), &ack), Ok("n".into()));
        let limit = Command::SetLimit { key: "spo2.low.medium".into(), value: Some(90.0) };
        assert_eq!(a.authorize(Some("n"), &baseline), Ok("n".into()));
        assert_eq!(a.authorize(Some("a"), &limit), Ok("a".into()));
        assert!(matches!(a.authorize(Some("n"), &limit), Err(AuthError::Forbidden { .. })));
        assert!(matches!(a.authorize(Some("v"), &ack), Err(AuthError::Forbidden { .. })));
        assert_eq!(a.authorize(Some("x"), &ack), Err(AuthError::UnknownUser("x".into())));
        assert_eq!(a.authorize(None, &ack), Err(AuthError::NoSender));
    }

    #[test]
    fn without_users_commands_are_disabled_except_in_the_loopback_embedded_demo() {
        let ack = Command::Acknowledge { alarm_id: None };
        assert_eq!(authorizer(Vec::new(), false).authorize(None, &ack), Err(AuthError::NoUsers));
        let demo = authorizer(Vec::new(), true);
        assert!(demo.demo());
        assert_eq!(demo.authorize(None, &ack), Ok("demo".into()));
    }
}
