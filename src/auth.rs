//! Users, passwords and roles, shared by the dashboard and MQTT command intake so both apply the same rules.
//! Passwords are stored only as argon2 PHC strings (`vigil hash-password`).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Password checks that run at once in the whole process (dashboard and embedded broker together).
pub const HASH_THREADS: usize = 2;
/// Password checks that may wait for a hashing thread; more are refused at once (the caller answers "busy").
pub const HASH_QUEUE: usize = 32;

type HashJob = Box<dyn FnOnce() + Send>;

/// The process's password-hashing threads: [`HASH_THREADS`] long-lived threads fed through a queue of
/// [`HASH_QUEUE`]. argon2 needs about 19 MiB per check; always hashing on the same few threads keeps that memory
/// in the same few allocator arenas, so a sign-in flood cannot grow the process (with `spawn_blocking` each
/// check may land on a new thread, and the allocator keeps a 19 MiB block per thread it ever ran on).
pub struct HashPool {
    jobs: std::sync::mpsc::SyncSender<HashJob>,
}

impl HashPool {
    /// The shared pool, started on first use.
    pub fn shared() -> &'static HashPool {
        static POOL: std::sync::OnceLock<HashPool> = std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            let (jobs, rx) = std::sync::mpsc::sync_channel::<HashJob>(HASH_QUEUE);
            let rx = std::sync::Arc::new(Mutex::new(rx));
            for i in 0..HASH_THREADS {
                let rx = rx.clone();
                let _ = std::thread::Builder::new().name(format!("vigil-hash-{i}")).spawn(move || loop {
                    let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    job();
                });
            }
            HashPool { jobs }
        })
    }

    /// Runs `f` on a hashing thread; `None` when the queue is full (answer "busy", do not wait).
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .try_send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.await.ok()
    }
}

/// Failed sign-ins for one name from one address before that pair is paused.
pub const LOCKOUT_FAILURES: u32 = 5;
/// Failed sign-ins from one address, whatever the names, before that address is paused.
pub const LOCKOUT_ADDRESS_FAILURES: u32 = 50;
/// How long a failure counts: a pause ends at most this long after the first failure that started it.
pub const LOCKOUT_WINDOW: Duration = Duration::from_secs(60);
/// Most entries the lockout remembers; beyond that the oldest are forgotten first.
const LOCKOUT_MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// The sign-in throttle shared by the dashboard and the embedded broker's gate: per name *and* address (so a
/// guesser elsewhere cannot lock a nurse out of her own station) plus per address (so one address cannot spray
/// names). An attempt is counted when it starts, before the password is hashed, under one lock, so parallel
/// guesses cannot all slip through; a success clears the name-and-address count. Counts expire after
/// [`LOCKOUT_WINDOW`], so nobody is locked out for longer than that after the guessing stops.
#[derive(Debug, Default)]
pub struct Lockout {
    entries: Mutex<HashMap<(Option<String>, IpAddr), Failures>>,
}

/// A counted sign-in attempt; call [`Attempt::succeeded`] when the password was right.
#[must_use]
#[derive(Debug)]
pub struct Attempt<'a> {
    lockout: &'a Lockout,
    key: (Option<String>, IpAddr),
}

impl Attempt<'_> {
    /// The password was right: forget this name's failures from this address.
    pub fn succeeded(self) {
        self.lockout.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Lockout {
    /// Counts an attempt by `name` from `ip`; `Err` with the time left when that pair or that address is paused.
    pub fn begin(&self, name: &str, ip: IpAddr) -> Result<Attempt<'_>, Duration> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= LOCKOUT_MAX_ENTRIES {
            entries.retain(|_, f| now.duration_since(f.since) < LOCKOUT_WINDOW);
            while entries.len() >= LOCKOUT_MAX_ENTRIES {
                let Some(oldest) = entries.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| k.clone()) else { break };
                entries.remove(&oldest);
            }
        }
        let pair = (Some(name.to_owned()), ip);
        let address = (None, ip);
        for (key, max) in [(&pair, LOCKOUT_FAILURES), (&address, LOCKOUT_ADDRESS_FAILURES)] {
            if let Some(f) = entries.get(key) {
                let age = now.duration_since(f.since);
                if age < LOCKOUT_WINDOW && f.count >= max {
                    return Err(LOCKOUT_WINDOW - age);
                }
            }
        }
        for key in [&pair, &address] {
            let f = entries.entry(key.clone()).or_insert(Failures { count: 0, since: now });
            if now.duration_since(f.since) >= LOCKOUT_WINDOW {
                *f = Failures { count: 0, since: now };
            }
            f.count += 1;
        }
        Ok(Attempt { lockout: self, key: pair })
    }
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
        Command::SetLimit { .. } | Command::SelfTest | Command::SelfTestResult { .. } => Role::Admin,
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
        Command::SelfTest | Command::SelfTestResult { .. } => "run the self-test",
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
    fn parallel_attempts_are_counted_before_checking_and_a_lockout_is_per_name_and_address() {
        let l = Lockout::default();
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let there: IpAddr = "10.0.0.2".parse().unwrap();
        // Five attempts in flight at once (none finished): the sixth is refused before it hashes anything.
        let open: Vec<_> = (0..LOCKOUT_FAILURES).map(|_| l.begin("nina", there).unwrap()).collect();
        assert!(l.begin("nina", there).is_err());
        drop(open);
        // The same name from the nurse's own station still works, and a success clears its count.
        l.begin("nina", here).unwrap().succeeded();
        for _ in 0..LOCKOUT_FAILURES {
            let _ = l.begin("nina", here).unwrap();
        }
        assert!(l.begin("nina", here).unwrap_err() <= LOCKOUT_WINDOW);
        // Spraying names from one address hits the address limit.
        let l = Lockout::default();
        let sprayed = (0..LOCKOUT_ADDRESS_FAILURES).filter(|i| l.begin(&format!("u{i}"), there).is_ok()).count();
        assert_eq!(sprayed, LOCKOUT_ADDRESS_FAILURES as usize);
        assert!(l.begin("fresh-name", there).is_err());
        assert!(l.begin("fresh-name", here).is_ok());
    }

    #[test]
    fn viewers_may_not_acknowledge_but_nurses_may() {
        let ack = Command::Acknowledge { alarm_id: None };
        assert!(matches!(authorize(Role::Viewer, &ack), Err(AuthError::Forbidden { role: "viewer", .. })));
        assert!(authorize(Role::Nurse, &ack).is_ok());
        assert!(authorize(Role::Admin, &Command::SessionEnd).is_ok());
    }
}
