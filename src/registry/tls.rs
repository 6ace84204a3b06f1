//! TLS settings from a `--cert-dir`, laid out like containers' `certs.d`:
//! every `*.crt` is a CA certificate trusted besides the system's roots;
//! a `NAME.cert` with its `NAME.key` is the client certificate (its chain)
//! and key that the registry may ask for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

fn bad(path: &Path, problem: impl std::fmt::Display) -> Error {
    Error::AuthFile {
        path: path.to_owned(),
        problem: format!("--cert-dir: {problem}"),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| Error::io(path, "reading", e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("not PEM certificates: {e:?}")))?;
    if certs.is_empty() {
        return Err(bad(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).map_err(|e| Error::io(path, "reading", e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad(path, "holds no PEM private key"),
        e => bad(path, format!("not a PEM private key: {e:?}")),
    })
}

/// The client TLS configuration for a certificate directory.
pub fn config(dir: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, "reading the certificate directory", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let has_ext = |p: &Path, ext: &str| p.extension().is_some_and(|e| e == ext);

    let mut roots = rustls::RootCertStore::empty();
    // The system's roots, as without --cert-dir; a missing or unreadable
    // system store leaves only the directory's.
    if let Ok(system) = rustls_native_certs::load_native_certs() {
        roots.add_parsable_certificates(system);
    }
    for path in names.iter().filter(|p| has_ext(p, "crt")) {
        for cert in read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| bad(path, format!("not a usable CA certificate: {e}")))?;
        }
    }

    let mut client = None;
    for cert in names.iter().filter(|p| has_ext(p, "cert")) {
        let key = cert.with_extension("key");
        if !key.exists() {
            return Err(bad(
                cert,
                format!("a client certificate without its key {key:?}"),
            ));
        }
        if client.is_none() {
            client = Some((read_certs(cert)?, read_key(&key)?, cert.clone()));
        }
    }
    for key in names.iter().filter(|p| has_ext(p, "key")) {
        if !key.with_extension("cert").exists() {
            return Err(bad(key, "a client key without its certificate (NAME.cert)"));
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(dir, e))?
        .with_root_certificates(roots);
    let config = match client {
        Some((chain, key, path)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad(&path, format!("unusable client certificate or key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_half_pairs_and_non_pem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(config(dir.path()).is_ok());
        std::fs::write(dir.path().join("client.key"), "x").unwrap();
        let e = config(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("client.key") && e.contains("without its certificate"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("client.key")).unwrap();
        std::fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
        let e = config(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("ca.crt") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = config(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(e.contains("absent"), "{e}");
    }
}
