//! TLS between a client and the HTTP proxy (`[http] CertFile`/`KeyFile`,
//! as wireproxy has them): an HTTPS proxy, on rustls.
//!
//! The files are read and checked when the config loads, so `--check`
//! and startup fail on a missing file, a file without a certificate or
//! key, or a key that is not the certificate's, naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The certificate chain and key of an HTTPS proxy, from its section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM, the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// Why the files cannot serve; says which file, never the key's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// `"CertFile"` or `"KeyFile"`: the key whose file is at fault.
    pub key: &'static str,
    pub message: String,
}

fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    let fail = |e: std::io::Error| TlsError {
        key,
        message: format!("cannot read {}: {e}", path.display()),
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    // The same cap as a config: a path to /dev/zero must not eat memory.
    crate::config::read_capped(file)
        .map(String::into_bytes)
        .map_err(fail)
}

/// The server side of TLS for `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read(&files.cert, "CertFile")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError {
            key: "CertFile",
            message: format!("{}: not a PEM certificate: {e}", files.cert.display()),
        })?;
    if certs.is_empty() {
        return Err(TlsError {
            key: "CertFile",
            message: format!(
                "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                files.cert.display()
            ),
        });
    }
    let key_pem = read(&files.key, "KeyFile")?;
    // The parse error is not shown: it could quote the key's bytes.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError {
        key: "KeyFile",
        message: format!(
            "{} holds no private key in PEM (expected -----BEGIN PRIVATE KEY----- or an RSA or EC key)",
            files.key.display()
        ),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            key: "CertFile",
            message: format!("TLS setup failed: {e}"),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError {
            key: "KeyFile",
            message: format!(
                "{} does not go with {}: {e}",
                files.key.display(),
                files.cert.display()
            ),
        })?;
    Ok(Arc::new(config))
}
