//! MQTT topic filters (MQTT 3.1.1, 4.7): whether a filter matches a topic, and whether two filters can match a
//! common topic. The embedded broker's gate uses them for read rights: a subscription is refused when it cannot
//! match any topic the account may read, and each message is delivered only when its topic is readable.

/// Whether `filter` (with `+` and `#`) matches `topic`. Wildcards at the first level do not match topics that
/// start with `$` (4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic matches both filters (`sport/#` and `+/tennis` do; `a/b` and `a/c` do not). `a/#` also
/// matches `a` itself (4.7.1.2).
pub fn overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_topics_and_overlap_as_the_mqtt_spec_says() {
        assert!(matches("v/bed/#", "v/bed/chair-1/alarm"));
        assert!(matches("v/bed/#", "v/bed"));
        assert!(matches("v/+/chair-1/alarm", "v/bed/chair-1/alarm"));
        assert!(!matches("v/+", "v/bed/chair-1"));
        assert!(!matches("v/status", "v/status/x"));
        assert!(!matches("#", "$SYS/broker"));
        assert!(overlap("v/#", "v/reply/#"));
        assert!(overlap("v/+/chair-1", "v/bed/#"));
        assert!(overlap("#", "v/status"));
        assert!(overlap("v/bed/#", "v/bed"));
        assert!(!overlap("v/cmd/#", "v/bed/#"));
        assert!(!overlap("v/reply/+", "v/status"));
        assert!(!overlap("v/status/x", "v/status"));
    }
}
