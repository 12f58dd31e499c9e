//! The e-mail target: one plain-text message per notification through an SMTP server (lettre, tokio, rustls
//! with the ring provider). STARTTLS is required by default; `tls` is SMTPS; `none` only for a relay on this
//! host. The server's `250` answer to the message is the receipt.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{SmtpSecurity, TargetConfig};
use super::webhook::error_chain;
use super::{Notification, NotifyError, Receipt};

/// A configured e-mail target.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp").field("server", &self.server).field("from", &self.from).field("to", &self.to).finish()
    }
}

impl Smtp {
    /// Builds the target `key` (reads `ca_file`: off the async runtime).
    pub fn new(key: &str, t: &TargetConfig, base_dir: &Path) -> Result<Smtp, NotifyError> {
        let setup = |k: &str, reason: String| NotifyError::Setup { key: format!("{key}.{k}"), reason };
        let host = t.host.clone().ok_or_else(|| setup("host", "an smtp target needs the server's host".into()))?;
        let security = t.security.unwrap_or_default();
        let port = t.port.unwrap_or(match security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        });
        let tls = match security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::Starttls | SmtpSecurity::Tls => {
                let mut params = TlsParameters::builder(host.clone());
                if let Some(file) = &t.ca_file {
                    use tokio_rustls::rustls::pki_types::pem::PemObject;
                    let full = if file.is_absolute() { file.clone() } else { base_dir.join(file) };
                    let certs = tokio_rustls::rustls::pki_types::CertificateDer::pem_file_iter(&full)
                        .map_err(|e| setup("ca_file", format!("cannot read '{}': {e}", full.display())))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| setup("ca_file", format!("'{}': {e}", full.display())))?;
                    for der in certs {
                        let cert = Certificate::from_der(der.to_vec())
                            .map_err(|e| setup("ca_file", format!("'{}': {e}", full.display())))?;
                        params = params.add_root_certificate(cert);
                    }
                }
                let params = params.build_rustls().map_err(|e| setup("security", error_chain(&e)))?;
                if security == SmtpSecurity::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(t.timeout_s)));
        if let (Some(user), Some(secret)) = (&t.username, &t.secret) {
            builder = builder.credentials(Credentials::new(user.clone(), secret.0.clone()));
        }
        let from_text = t.from.as_deref().unwrap_or_default();
        let from = from_text.parse::<Mailbox>().map_err(|e| setup("from", format!("'{from_text}': {e}")))?;
        let to =
            t.to.iter()
                .enumerate()
                .map(|(i, a)| a.parse::<Mailbox>().map_err(|e| setup(&format!("to[{i}]"), format!("'{a}': {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
        Ok(Smtp { transport: builder.build(), from, to, server: format!("{host}:{port}") })
    }

    /// Sends one notification as an e-mail.
    pub async fn deliver(&self, n: &Notification) -> Result<Receipt, NotifyError> {
        let mut message = Message::builder().from(self.from.clone()).subject(n.headline());
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(n.text())
            .map_err(|e| NotifyError::Refused(format!("cannot build the message: {e}")))?;
        let response = self.transport.send(message).await.map_err(|e| {
            let text = error_chain(&e);
            if e.is_permanent() {
                NotifyError::Refused(format!("{}: {text}", self.server))
            } else {
                NotifyError::Unreachable(format!("{}: {text}", self.server))
            }
        })?;
        let words: Vec<&str> = response.message().collect();
        Ok(Receipt { detail: format!("SMTP {} {}", response.code(), words.join(" ")), acknowledged_by: None })
    }
}
