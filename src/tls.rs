//! Server-side TLS for Vigil's own listeners (`dashboard.tls`, `mllp.tls`): PEM files read into a rustls
//! `ServerConfig` with the ring provider (the only crypto provider in the build: two providers panic at start).
//!
//! The files are read once at start-up, on a blocking thread ([`load_server_config`] is synchronous; `start`
//! calls it through `spawn_blocking`, `vigil check-config` directly). Every problem names the key and the reason:
//! a file that cannot be read, a file without a PEM certificate or key, a key that does not belong to the
//! certificate, a client CA file without a usable CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, ListenerTlsConfig};

/// Why a listener's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{key}: cannot read '{}': {source}", file.display())]
    Read {
        /// Key path, e.g. `dashboard.tls.key_file`.
        key: String,
        /// The file, resolved against the config file's directory.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind the key names.
    #[error("{key}: '{}': {reason}", file.display())]
    Pem {
        /// Key path.
        key: String,
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The files read fine but rustls refuses them together (a key that is not the certificate's, ...).
    #[error("{key}: {reason}")]
    Invalid {
        /// Key path.
        key: String,
        /// Why.
        reason: String,
    },
}

impl TlsError {
    /// The key path the error is about.
    pub fn key(&self) -> &str {
        match self {
            TlsError::Read { key, .. } | TlsError::Pem { key, .. } | TlsError::Invalid { key, .. } => key,
        }
    }
}

fn read(key: String, file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read { key, file: file.to_path_buf(), source })
}

fn certificates(key: String, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key.clone(), file)?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem {
        key: key.clone(),
        file: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { key, file: file.to_path_buf(), reason: "holds no PEM CERTIFICATE".into() });
    }
    Ok(certs)
}

/// The CA certificates of a PEM file (at key `key`) as a trust store.
fn trusted_roots(key: &str, ca_file: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(key.to_owned(), ca_file)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            key: key.to_owned(),
            file: ca_file.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// Reads `tls` (the settings at `at`, e.g. `dashboard.tls`) into a rustls server configuration. Synchronous: it
/// reads files, so async callers run it on a blocking thread. `alpn` lists the application protocols offered.
pub fn load_server_config(
    config: &Config,
    at: &str,
    tls: &ListenerTlsConfig,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_file = config.resolve(&tls.cert_file);
    let key_file = config.resolve(&tls.key_file);
    let chain = certificates(format!("{at}.cert_file"), &cert_file)?;
    let key_pem = read(format!("{at}.key_file"), &key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        key: format!("{at}.key_file"),
        file: key_file.clone(),
        reason: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid { key: at.to_owned(), reason: e.to_string() })?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let key = format!("{at}.client_ca_file");
            let roots = trusted_roots(&key, &config.resolve(ca))?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Invalid { key, reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| TlsError::Invalid {
        key: format!("{at}.key_file"),
        reason: format!("'{}' and '{}' cannot be used together: {e}", key_file.display(), cert_file.display()),
    })?;
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(server))
}

/// Reads a CA file (PEM, at key `key`) into a rustls client configuration that trusts only that CA: for Vigil's
/// outgoing links (an IHE ACM Alert Manager). Synchronous, like [`load_server_config`].
pub fn load_client_config(key: &str, ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = trusted_roots(key, ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid { key: key.to_owned(), reason: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(client))
}
