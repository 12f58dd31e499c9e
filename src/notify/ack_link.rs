//! One-time acknowledge links: `<notify.public_url>/ack/<id>-<secret>`, carried in start and escalation
//! notifications. The store keeps only a BLAKE2b digest of the secret; a link is checked by its id, its secret
//! compared in constant time, and it works once, until it expires (`notify.ack_link_ttl_s`). Using it sends an
//! acknowledge into the bed through the hub, attributed to the target that carried it
//! ([`super::acknowledge_from_target`]).

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::NotifyError;
use crate::event::AlarmEvent;
use crate::store::notify::TokenRecord;
use crate::store::Store;
use crate::vitals::Timestamp;

type Blake2b256 = Blake2b<U32>;

/// Issues and checks acknowledge links.
#[derive(Debug, Clone)]
pub struct AckLinks {
    store: Store,
    /// `notify.public_url` without a trailing `/`; `None`: no links.
    base: Option<String>,
    ttl: chrono::Duration,
}

fn digest(secret: &[u8]) -> Vec<u8> {
    Blake2b256::digest(secret).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

impl AckLinks {
    /// Links under `base` (none when `None`), valid for `ttl_s` seconds.
    pub fn new(store: Store, base: Option<&str>, ttl_s: u64) -> AckLinks {
        let ttl = chrono::Duration::seconds(i64::try_from(ttl_s).unwrap_or(86_400));
        AckLinks { store, base: base.map(|b| b.trim_end_matches('/').to_owned()), ttl }
    }

    /// A new link acknowledging `event`'s alarm, carried by `target`; `None` without `notify.public_url`.
    pub async fn issue(&self, target: &str, event: &AlarmEvent, now: Timestamp) -> Result<Option<String>, NotifyError> {
        let Some(base) = &self.base else { return Ok(None) };
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let id = self
            .store
            .notify_issue_token(digest(&secret), target, &event.bed, &event.alarm_id, now, now + self.ttl)
            .await?;
        Ok(Some(format!("{base}/ack/{id}-{}", hex(&secret))))
    }

    /// The token of a link, if it is one Vigil issued, unused and not expired (reads the store: call it off the
    /// async runtime).
    pub fn check(&self, token: &str, now: Timestamp) -> Result<TokenRecord, NotifyError> {
        let (id, secret) = token.split_once('-').ok_or(NotifyError::UnknownLink)?;
        let id: i64 = id.parse().map_err(|_| NotifyError::UnknownLink)?;
        let secret = unhex(secret).filter(|s| s.len() == 32).ok_or(NotifyError::UnknownLink)?;
        let record = self.store.notify_token(id)?.ok_or(NotifyError::UnknownLink)?;
        if !bool::from(record.digest.ct_eq(&digest(&secret))) {
            return Err(NotifyError::UnknownLink);
        }
        if record.used.is_some() {
            return Err(NotifyError::LinkUsed);
        }
        if record.expires <= now {
            return Err(NotifyError::LinkExpired);
        }
        Ok(record)
    }

    /// Checks a link and marks it used: it works once, even when used twice at the same moment.
    pub async fn redeem(&self, token: &str, now: Timestamp) -> Result<TokenRecord, NotifyError> {
        let (links, text) = (self.clone(), token.to_owned());
        let record = tokio::task::spawn_blocking(move || links.check(&text, now))
            .await
            .map_err(|e| NotifyError::Store(crate::store::StoreError::Failed(e.to_string())))??;
        if !self.store.notify_consume_token(record.id, now).await? {
            return Err(NotifyError::LinkUsed);
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }
}
