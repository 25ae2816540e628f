//! Verification of push webhooks (`POST /hooks/git/<source>`): a request
//! triggers a fetch only when it proves it knows the source's secret.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
//! - Gitea and Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature`:
//!   `<hex HMAC-SHA256 of the body>` (they may send `X-Hub-Signature-256`
//!   too; their own header is checked first).
//! - GitLab: `X-Gitlab-Token: <the secret itself>`.
//!
//! Comparisons are constant-time. The first signature header present
//! decides: a bad one is refused, never passed over for another.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Which kind of webhook a verified request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    /// Gitea or Forgejo.
    Gitea,
    GitLab,
}

/// Why a webhook request was refused (answer 401; the reason is for the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "no webhook signature (X-Hub-Signature-256, X-Gitea-Signature, X-Forgejo-Signature or X-Gitlab-Token)"
    )]
    Missing,
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    #[error("the {0} signature does not match")]
    Mismatch(&'static str),
    #[error("the source has no webhook secret configured")]
    NoSecret,
}

/// Checks a webhook request against `secret`. `header` looks a request
/// header up by name (case-insensitively, as `http::HeaderMap::get` does),
/// e.g. `|n| headers.get(n).and_then(|v| v.to_str().ok())`.
pub fn verify<'h>(
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    secret: &[u8],
) -> Result<Provider, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    for name in ["X-Gitea-Signature", "X-Forgejo-Signature"] {
        if let Some(value) = header(name) {
            check_hmac(name, value.trim(), body, secret)?;
            return Ok(Provider::Gitea);
        }
    }
    if let Some(value) = header("X-Hub-Signature-256") {
        let name = "X-Hub-Signature-256";
        let hex = value
            .trim()
            .strip_prefix("sha256=")
            .ok_or(WebhookError::Malformed(name))?;
        check_hmac(name, hex, body, secret)?;
        return Ok(Provider::GitHub);
    }
    if let Some(token) = header("X-Gitlab-Token") {
        // Compare digests, so that neither the length nor the content of the
        // secret leaks through timing.
        let (a, b) = (Sha256::digest(token.as_bytes()), Sha256::digest(secret));
        if bool::from(a.ct_eq(&b)) {
            return Ok(Provider::GitLab);
        }
        return Err(WebhookError::Mismatch("X-Gitlab-Token"));
    }
    Err(WebhookError::Missing)
}

fn check_hmac(
    name: &'static str,
    hex_sig: &str,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    let sig = hex::decode(hex_sig).map_err(|_| WebhookError::Malformed(name))?;
    if sig.len() != 32 {
        return Err(WebhookError::Malformed(name));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| WebhookError::Mismatch(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example: secret "It's a Secret to Everybody",
    /// payload "Hello, World!".
    const GH_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(
        pairs: &[(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<&'static str> + use<> {
        let pairs = pairs.to_vec();
        move |n: &str| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| *v)
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn github_documented_vector() {
        let sig = leak(format!("sha256={GH_SIG}"));
        let h = headers(&[("x-hub-signature-256", sig)]);
        assert_eq!(verify(&h, GH_BODY, GH_SECRET), Ok(Provider::GitHub));
    }

    #[test]
    fn rfc4231_vector_as_gitea() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let h = headers(&[(
            "X-Gitea-Signature",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        )]);
        assert_eq!(
            verify(&h, b"what do ya want for nothing?", b"Jefe"),
            Ok(Provider::Gitea)
        );
        let h = headers(&[(
            "X-Forgejo-Signature",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        )]);
        assert_eq!(
            verify(&h, b"what do ya want for nothing?", b"Jefe"),
            Ok(Provider::Gitea)
        );
    }

    #[test]
    fn wrong_secret_and_tampered_body_are_refused() {
        let sig = leak(format!("sha256={GH_SIG}"));
        let h = headers(&[("X-Hub-Signature-256", sig)]);
        assert_eq!(
            verify(&h, GH_BODY, b"another secret"),
            Err(WebhookError::Mismatch("X-Hub-Signature-256"))
        );
        assert_eq!(
            verify(&h, b"Hello, World?", GH_SECRET),
            Err(WebhookError::Mismatch("X-Hub-Signature-256"))
        );
        let h = headers(&[("X-Gitea-Signature", GH_SIG)]);
        assert_eq!(
            verify(&h, b"Hello, World!!", GH_SECRET),
            Err(WebhookError::Mismatch("X-Gitea-Signature"))
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_refused() {
        let none = headers(&[("Content-Type", "application/json")]);
        assert_eq!(
            verify(&none, GH_BODY, GH_SECRET),
            Err(WebhookError::Missing)
        );
        // Without the "sha256=" prefix, or the old sha1 form.
        for bad in [GH_SIG, "sha1=0123", "sha256=zz", "sha256=00"] {
            let h = headers(&[("X-Hub-Signature-256", leak(bad.to_string()))]);
            assert_eq!(
                verify(&h, GH_BODY, GH_SECRET),
                Err(WebhookError::Malformed("X-Hub-Signature-256")),
                "{bad}"
            );
        }
        let sig = leak(format!("sha256={GH_SIG}"));
        let h = headers(&[("X-Hub-Signature-256", sig)]);
        assert_eq!(verify(&h, GH_BODY, b""), Err(WebhookError::NoSecret));
    }

    #[test]
    fn a_bad_gitea_signature_is_not_passed_over_for_a_good_github_one() {
        let sig = leak(format!("sha256={GH_SIG}"));
        let h = headers(&[("X-Gitea-Signature", "00"), ("X-Hub-Signature-256", sig)]);
        assert_eq!(
            verify(&h, GH_BODY, GH_SECRET),
            Err(WebhookError::Malformed("X-Gitea-Signature"))
        );
    }

    #[test]
    fn gitlab_token() {
        let h = headers(&[("X-Gitlab-Token", "s3cret")]);
        assert_eq!(verify(&h, b"{}", b"s3cret"), Ok(Provider::GitLab));
        assert_eq!(
            verify(&h, b"{}", b"s3cret2"),
            Err(WebhookError::Mismatch("X-Gitlab-Token"))
        );
        let h = headers(&[("X-Gitlab-Token", "")]);
        assert_eq!(
            verify(&h, b"{}", b"s3cret"),
            Err(WebhookError::Mismatch("X-Gitlab-Token"))
        );
    }
}
