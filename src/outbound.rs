//! The service's outbound HTTP(S) calls (the webhook executor, the push JWKS fetch): one
//! rustls configuration (the bundled Mozilla roots, plus the PEM certificates an operator adds
//! for an internal CA), and a deadline over a whole exchange. awc's own timeout ends when the
//! answer's head arrives, so a body that stops arriving needs [`within`]. Redirects are not
//! followed.
//!
//! `awc::Client` is bound to its thread; the TLS configuration is shared, and a client is made
//! for each exchange from it ([`Tls::client`]). An outbound URL is printed or logged only as
//! [`shown_url`] shows it (no password, no query).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

/// The TLS configuration outbound clients share.
#[derive(Clone)]
pub struct Tls(Arc<rustls::ClientConfig>);

impl Tls {
    /// The bundled roots and every certificate of `ca_file` (PEM), when one is named.
    pub fn new(ca_file: Option<&Path>) -> Result<Tls, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{shown}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("{shown}: no PEM certificate in it"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{shown}: a certificate rustls cannot use: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls(Arc::new(config)))
    }

    /// A client for one exchange; `timeout` ends waiting for the answer's head. Redirects are
    /// answers, not followed: a webhook's 3xx fails the action (SPEC §6: anything but 2xx),
    /// and neither the action nor its signature goes to a host nobody configured.
    pub fn client(&self, timeout: Duration) -> awc::Client {
        awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(self.0.clone()))
            .timeout(timeout)
            .disable_redirects()
            .finish()
    }
}

/// Runs `exchange` to its end or until `deadline`; `None` when the deadline came first.
pub async fn within<T>(deadline: Duration, exchange: impl Future<Output = T>) -> Option<T> {
    actix_web::rt::time::timeout(deadline, exchange).await.ok()
}

/// A URL's parts as written: the scheme with its `://` (empty when there is none), the
/// userinfo before an `@` in the authority, the rest of the authority, and what follows it
/// (path, query, fragment). Text, not parsing: it takes a malformed URL too.
fn url_parts(url: &str) -> (&str, Option<&str>, &str, &str) {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => (scheme, Some(userinfo), host, tail),
        None => (scheme, None, authority, tail),
    }
}

/// An outbound URL as sent: without its userinfo, and the HTTP Basic credentials that userinfo
/// gives (`https://user:pw@host/…`, percent-decoded; no `:` is an empty password), as curl
/// reads such a URL. awc drops the userinfo and sends no `Authorization`, so a receiver that
/// wants the credentials refused every call.
pub fn basic_credentials(url: &str) -> (String, Option<(String, String)>) {
    match url_parts(url) {
        (scheme, Some(userinfo), host, tail) if !scheme.is_empty() => {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                format!("{scheme}{host}{tail}"),
                Some((decode(user), decode(password))),
            )
        }
        _ => (url.to_owned(), None),
    }
}

/// `url` as printouts and logs show it: a password in it (`https://user:pw@host`) and its
/// query (where services put tokens: `?token=…`) as `***`, the rest as written. Works on any
/// text, so a malformed URL in a configuration error is shown the same way.
pub fn shown_url(url: &str) -> String {
    let (scheme, userinfo, host, tail) = url_parts(url);
    let userinfo = match userinfo.map(|u| (u, u.split_once(':'))) {
        Some((_, Some((user, _password)))) => format!("{user}:***@"),
        Some((user, None)) => format!("{user}@"),
        None => String::new(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let fragment = query.find('#').map_or("", |i| &query[i..]);
            format!("{path}?***{fragment}")
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{userinfo}{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::{basic_credentials, shown_url};

    #[test]
    fn userinfo_becomes_basic_credentials() {
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        for (url, sent, credentials) in [
            (
                "https://ops:pa55@hooks.example/h?x=1",
                "https://hooks.example/h?x=1",
                pair("ops", "pa55"),
            ),
            (
                "http://a%40b:p%3Aw@h:8080",
                "http://h:8080",
                pair("a@b", "p:w"),
            ),
            ("http://user@h/x", "http://h/x", pair("user", "")),
            ("https://h/x?next=a@b", "https://h/x?next=a@b", None),
            ("https://h/x", "https://h/x", None),
        ] {
            assert_eq!(
                basic_credentials(url),
                (sent.to_owned(), credentials),
                "{url}"
            );
        }
    }

    #[test]
    fn urls_are_shown_without_their_password_or_query() {
        for (url, shown) in [
            (
                "https://user:pw@example.com/hook?token=abc",
                "https://user:***@example.com/hook?***",
            ),
            (
                "http://user@example.com:8080/a",
                "http://user@example.com:8080/a",
            ),
            (
                "https://example.com/a?b=c#top",
                "https://example.com/a?***#top",
            ),
            (
                "https://www.googleapis.com/oauth2/v3/certs",
                "https://www.googleapis.com/oauth2/v3/certs",
            ),
            ("http://u:p@exa mple/x", "http://u:***@exa mple/x"),
            ("u:p@host", "u:***@host"),
            ("", ""),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
    }
}
