//! Users, passwords and roles, shared by the dashboard and MQTT command intake so both apply the same rules.
//! Passwords are stored only as argon2 PHC strings (`vigil hash-password`).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::{Role, UserConfig};
use crate::event::Command;

/// Why authentication or authorisation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password (deliberately not saying which).
    #[error("unknown user or wrong password")]
    BadCredentials,
    /// The user's role does not allow the command.
    #[error("role '{role}' may not {action}")]
    Forbidden {
        /// The role.
        role: &'static str,
        /// What was attempted.
        action: &'static str,
    },
    /// The stored hash is not a valid PHC string.
    #[error("stored password hash is invalid: {0}")]
    BadHash(String),
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::BadHash(e.to_string()))
}

/// Checks a user's password against the configured users; returns the user.
pub fn authenticate<'a>(users: &'a [UserConfig], name: &str, password: &str) -> Result<&'a UserConfig, AuthError> {
    let Some(user) = users.iter().find(|u| u.name == name) else {
        // Spend the same effort as a real check so response time does not reveal which names exist.
        let _ = hash_password(password);
        return Err(AuthError::BadCredentials);
    };
    let parsed = PasswordHash::new(&user.password_hash).map_err(|e| AuthError::BadHash(e.to_string()))?;
    Argon2::default().verify_password(password.as_bytes(), &parsed).map_err(|_| AuthError::BadCredentials)?;
    Ok(user)
}

/// Role names as in the configuration.
pub const fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Nurse => "nurse",
        Role::Admin => "admin",
    }
}

/// The least role that may send a command. Viewers only look; nurses acknowledge, pause audio, run sessions and
/// enter baselines (CLINICAL.md: the baseline may be "a value a nurse enters"); only admins override limits.
pub const fn required_role(command: &Command) -> Role {
    match command {
        Command::SetLimit { .. } => Role::Admin,
        _ => Role::Nurse,
    }
}

/// Whether a role may send a command.
pub fn authorize(role: Role, command: &Command) -> Result<(), AuthError> {
    if role >= required_role(command) {
        Ok(())
    } else {
        Err(AuthError::Forbidden { role: role_name(role), action: command_action(command) })
    }
}

/// A short verb phrase for a command, for messages and the action log.
pub const fn command_action(command: &Command) -> &'static str {
    match command {
        Command::Acknowledge { .. } => "acknowledge alarms",
        Command::PauseAudio { .. } => "pause audio",
        Command::ResumeAudio => "resume audio",
        Command::SessionStart { .. } => "start sessions",
        Command::InfusionStart => "start infusions",
        Command::InfusionStop => "stop infusions",
        Command::SessionEnd => "end sessions",
        Command::SetBaseline { .. } => "set baselines",
        Command::SetLimit { .. } => "override alarm limits",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role, password: &str) -> UserConfig {
        UserConfig { name: name.into(), role, password_hash: hash_password(password).unwrap() }
    }

    #[test]
    fn the_right_password_authenticates_and_a_wrong_one_does_not() {
        let users = vec![user("ana", Role::Nurse, "correct horse")];
        assert_eq!(authenticate(&users, "ana", "correct horse").unwrap().name, "ana");
        assert_eq!(authenticate(&users, "ana", "wrong").unwrap_err(), AuthError::BadCredentials);
        assert_eq!(authenticate(&users, "bob", "correct horse").unwrap_err(), AuthError::BadCredentials);
    }

    #[test]
    fn viewers_may_not_acknowledge_but_nurses_may() {
        let ack = Command::Acknowledge { alarm_id: None };
        assert!(matches!(authorize(Role::Viewer, &ack), Err(AuthError::Forbidden { role: "viewer", .. })));
        assert!(authorize(Role::Nurse, &ack).is_ok());
        assert!(authorize(Role::Admin, &Command::SessionEnd).is_ok());
    }
}
