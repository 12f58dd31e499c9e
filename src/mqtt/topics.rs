//! The topic tree, in one place so the code, `docs/asyncapi.yaml` and `docs/mqtt-api.md` cannot drift apart.
//!
//! ```text
//! {prefix}/{site}/{ward}/status               retained, QoS 1: online (birth) / offline (will or clean shutdown)
//! {prefix}/{site}/{ward}/bed/{bed}/vitals     QoS 0: latest numerics
//! {prefix}/{site}/{ward}/bed/{bed}/alarm      QoS 1, not retained: every alarm lifecycle event (from the outbox)
//! {prefix}/{site}/{ward}/bed/{bed}/alarms     retained, QoS 1: the bed's present alarms
//! {prefix}/{site}/{ward}/bed/{bed}/session    retained, QoS 1: latest session event
//! {prefix}/{site}/{ward}/bed/{bed}/device     retained, QoS 1: the bed's sources, link state, counters
//! {prefix}/{site}/{ward}/cmd/{bed}/{user}     in: commands (JSON) by that broker account, subscribed at QoS 0
//! {prefix}/{site}/{ward}/cmd/{bed}            in: the loopback demo's anonymous commands (run as `demo`)
//! {prefix}/{site}/{ward}/reply/...            out, QoS 1: command replies (default `reply/{bed}`)
//! ```

use crate::config::Config;

/// Builds topic names for one site and ward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics under `{topic_prefix}/{site}/{ward}` from the configuration.
    pub fn from_config(config: &Config) -> Topics {
        Topics::new(&config.mqtt.topic_prefix, &config.site.name, &config.site.ward)
    }

    /// Topics under `{prefix}/{site}/{ward}`.
    pub fn new(prefix: &str, site: &str, ward: &str) -> Topics {
        Topics { base: format!("{}/{site}/{ward}", prefix.trim_end_matches('/')) }
    }

    /// `{prefix}/{site}/{ward}`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Retained birth/death status of this Vigil.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// Latest numerics of a bed.
    pub fn vitals(&self, bed: &str) -> String {
        format!("{}/bed/{bed}/vitals", self.base)
    }

    /// Alarm lifecycle events of a bed.
    pub fn alarm(&self, bed: &str) -> String {
        format!("{}/bed/{bed}/alarm", self.base)
    }

    /// Retained present alarms of a bed.
    pub fn alarms(&self, bed: &str) -> String {
        format!("{}/bed/{bed}/alarms", self.base)
    }

    /// Retained latest session event of a bed.
    pub fn session(&self, bed: &str) -> String {
        format!("{}/bed/{bed}/session", self.base)
    }

    /// Retained source status of a bed.
    pub fn device(&self, bed: &str) -> String {
        format!("{}/bed/{bed}/device", self.base)
    }

    /// Where a user's commands for a bed arrive: the broker pins the last segment to the signed-in account.
    pub fn command(&self, bed: &str, user: &str) -> String {
        format!("{}/cmd/{bed}/{user}", self.base)
    }

    /// Where the loopback demo's anonymous commands for a bed arrive (they run as `demo`).
    pub fn demo_command(&self, bed: &str) -> String {
        format!("{}/cmd/{bed}", self.base)
    }

    /// The subscription filter for all commands (`cmd/{bed}` and `cmd/{bed}/{user}`).
    pub fn command_filter(&self) -> String {
        format!("{}/cmd/#", self.base)
    }

    /// The bed a command topic is for and the user it names (`None` for `cmd/{bed}`), if it is one.
    pub fn command_target<'a>(&self, topic: &'a str) -> Option<(&'a str, Option<&'a str>)> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/cmd/")?;
        let (bed, user) = match rest.split_once('/') {
            Some((bed, user)) => (bed, Some(user)),
            None => (rest, None),
        };
        let ok = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
        (ok(bed) && user.is_none_or(ok)).then_some((bed, user))
    }

    /// The bed a command topic is for, if it is one.
    pub fn bed_of_command<'a>(&self, topic: &'a str) -> Option<&'a str> {
        self.command_target(topic).map(|(bed, _)| bed)
    }

    /// Default reply topic for commands to a bed.
    pub fn reply(&self, bed: &str) -> String {
        format!("{}/reply/{bed}", self.base)
    }

    /// Replies may only go under `{base}/reply/`, so a command cannot make Vigil publish over its own topics.
    pub fn reply_allowed(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.base)
            .and_then(|t| t.strip_prefix("/reply/"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['+', '#']))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_documented_tree() {
        let t = Topics::new("vigil/v1", "demo-clinic", "ketamine-suite");
        assert_eq!(t.status(), "vigil/v1/demo-clinic/ketamine-suite/status");
        assert_eq!(t.alarm("chair-1"), "vigil/v1/demo-clinic/ketamine-suite/bed/chair-1/alarm");
        assert_eq!(t.bed_of_command("vigil/v1/demo-clinic/ketamine-suite/cmd/chair-1"), Some("chair-1"));
        assert_eq!(
            t.command_target("vigil/v1/demo-clinic/ketamine-suite/cmd/chair-1/nina"),
            Some(("chair-1", Some("nina")))
        );
        assert_eq!(t.bed_of_command("vigil/v1/demo-clinic/ketamine-suite/cmd/chair-1/x/y"), None);
        assert!(t.reply_allowed("vigil/v1/demo-clinic/ketamine-suite/reply/nurse-app/42"));
        assert!(!t.reply_allowed("vigil/v1/demo-clinic/ketamine-suite/status"));
        assert!(!t.reply_allowed("vigil/v1/demo-clinic/ketamine-suite/reply/"));
    }
}
