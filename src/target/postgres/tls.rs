//! TLS to a PostgreSQL server (feature `tls`), through rustls with the ring provider: the
//! checks of libpq's `sslmode` on the server's certificate, and what a refused one means.
//!
//! | mode | encrypted | certificate checked |
//! | --- | --- | --- |
//! | `allow`, `prefer` | if the server offers TLS; plain if it refuses it or the handshake fails | as `require` |
//! | `require` | always | against the root certificates if a file is given or `~/.postgresql/root.crt` exists (chain only, as `verify-ca`); else not at all |
//! | `verify-ca` | always | chains to a root certificate |
//! | `verify-full` | always | chains to a root certificate and names the host connected to (`host`, not `hostaddr`) |
//!
//! The verifying modes need root certificates: the `sslrootcert` file (PEM), else
//! `~/.postgresql/root.crt`, or the system's with `sslrootcert=system`. Handshake signatures
//! are always checked, also where the certificate is not: the connection is then encrypted
//! but not authenticated, as with libpq's `require`.

use std::path::Path;
use std::sync::Arc;

use postgres::{Client, Config, NoTls};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect::{RootCert, SslMode, TlsSettings, pg_error, tls_settings_error};
use crate::error::Error;
use crate::target::ConnString;

/// Connects over TCP with the TLS `settings` (not `disable`), falling back to plain under
/// `prefer` and `allow` when the handshake fails, as libpq does.
pub(super) fn connect(
    conn: &ConnString,
    cfg: &mut Config,
    settings: &TlsSettings,
) -> Result<Client, Error> {
    let tls = connector(settings).map_err(|reason| tls_settings_error(conn, reason))?;
    cfg.ssl_mode(if settings.mode.requires_tls() {
        postgres::config::SslMode::Require
    } else {
        postgres::config::SslMode::Prefer
    });
    let what = format!("connect ({})", settings.describe());
    match cfg.connect(tls) {
        Ok(client) => Ok(client),
        Err(e) if !settings.mode.requires_tls() && hint(&e).is_some() => {
            tracing::warn!(
                target = %conn.redacted(),
                error = %e,
                "the TLS handshake failed; connecting without TLS (sslmode={})",
                settings.mode
            );
            cfg.ssl_mode(postgres::config::SslMode::Disable);
            cfg.connect(NoTls)
                .map_err(|e| pg_error(conn.redacted(), &what, e))
        }
        Err(e) => Err(pg_error(conn.redacted(), &what, e)),
    }
}

/// The client's TLS connector for `settings`.
///
/// # Errors
/// The root certificates cannot be had: the message names the file and what is wrong.
fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &settings.root {
        RootCert::File(path) => Some(roots_from_file(path)?),
        RootCert::Default(path) if path.exists() => Some(roots_from_file(path)?),
        RootCert::System => Some(system_roots()?),
        RootCert::Default(_) | RootCert::None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None if settings.mode.verifies() => {
            return Err(format!(
                "sslmode={} checks the server's certificate and there is no root certificate \
                 to check it by ({} does not exist): name a PEM file with sslrootcert (or \
                 PGSSLROOTCERT), use the system's roots with sslrootcert=system, or use \
                 sslmode=require (encrypted, the server not checked)",
                settings.mode, settings.root
            ));
        }
        None => Arc::new(Unchecked {
            algorithms: provider.signature_verification_algorithms,
        }),
        Some(roots) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        format!(
                            "the root certificates ({}) cannot be used: {e}",
                            settings.root
                        )
                    })?;
            if settings.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly { webpki })
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates of a PEM file, as roots.
fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the root certificate file {shown} (sslrootcert): {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| {
            format!("the root certificate file {shown} (sslrootcert) is not PEM: {e}")
        })?;
        roots.add(cert).map_err(|e| {
            format!("the root certificate file {shown} (sslrootcert) holds a certificate that cannot be used: {e}")
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "the root certificate file {shown} (sslrootcert) holds no certificate (PEM, -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(roots)
}

/// The system's trusted roots (`sslrootcert=system`).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!(
            "sslrootcert=system and no system root certificate was found{why}"
        ));
    }
    Ok(roots)
}

/// What a failed TLS handshake says about the server's certificate, if it was refused.
pub(super) fn hint(e: &postgres::Error) -> Option<&'static str> {
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let rustls_error = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(r) = rustls_error {
            return Some(match r {
                rustls::Error::InvalidCertificate(c) => match c {
                    CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                        "the server's certificate is not issued by a root certificate of sslrootcert"
                    }
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => {
                        "the server's certificate does not name the host connected to (verify-full checks the name: connect by a name the certificate holds, or use verify-ca)"
                    }
                    CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. } => {
                        "the server's certificate is outside its validity period"
                    }
                    _ => "the server's certificate failed verification",
                },
                _ => "the TLS handshake with the server failed",
            });
        }
        src = c.source();
    }
    None
}

/// `verify-ca` (and `require` with a root certificate): the certificate must chain to a root;
/// the name in it is not checked.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // The chain is checked before the name: a wrong name means a good chain.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `require` (and `prefer`, `allow`) without root certificates: any certificate is taken; the
/// handshake's signatures by its key are still checked.
#[derive(Debug)]
struct Unchecked {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
