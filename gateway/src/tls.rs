//! Direct TLS (`wss://`, `https://`) for sites without a TLS-terminating
//! ingress: `TLS_CERT_FILE` (PEM chain, leaf first) and `TLS_KEY_FILE` (PEM
//! private key) are read once at start-up into a rustls server configuration.
//! Behind an ingress that terminates TLS, leave both unset.

use chat_shared::config::ConfigError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A validated TLS server configuration.
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// Loads the certificate chain and key; `Ok(None)` when neither is set. The
/// error names the variable at fault.
pub fn load(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<TlsConfig>, ConfigError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(ConfigError::new(
                "TLS_KEY_FILE",
                "must be set together with TLS_CERT_FILE",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "TLS_CERT_FILE",
                "must be set together with TLS_KEY_FILE",
            ))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new("TLS_CERT_FILE", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            "TLS_CERT_FILE",
            format!("{}: no certificate in it", cert.display()),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ConfigError::new("TLS_KEY_FILE", format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConfigError::new("TLS_CERT_FILE", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| {
        ConfigError::new(
            "TLS_KEY_FILE",
            format!("does not match the certificate: {e}"),
        )
    })?;
    Ok(Some(Arc::new(config)))
}
