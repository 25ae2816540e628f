//! What a registry says about a repository without pulling anything: the
//! digest a tag points at now (a `HEAD` on the manifest, which Docker Hub
//! does not count as a pull) and the repository's tags (`/tags/list`,
//! page after page as the `Link` header leads). Image updates ask these;
//! connections, TLS and authentication are the pull's ([`super::pull`]).

use moor_spec::reference::ImageRef;
use moor_store::Digest;

use super::oci::media;
use super::pull::{Client, Payload, PullError, PullOptions};

/// Pages of a tag list followed at most.
const MAX_PAGES: usize = 100;
/// Tags accepted in all (a repository with more is refused, not truncated:
/// a semver pick over part of a list could pick wrong).
const MAX_TAGS: usize = 100_000;
/// Largest page of a tag list accepted.
const MAX_PAGE_BYTES: u64 = 4 << 20;
/// Tags asked for per page.
const PAGE_SIZE: usize = 1000;

/// The digest `reference`'s tag (or `latest`) points at in its registry:
/// for a multi-platform image, the index's digest, so that a re-push of
/// any platform is seen. From `Docker-Content-Digest` of a `HEAD`; when
/// the registry gives none (or not a sha256 one), the manifest is fetched
/// and hashed instead.
pub fn head_digest(reference: &ImageRef, opts: &PullOptions) -> Result<String, PullError> {
    let client = Client::new(reference, opts)?;
    let tag = reference.tag.as_deref().unwrap_or("latest");
    let url = format!("{}/v2/{}/manifests/{tag}", client.base, client.repository);
    let resp = client.request("HEAD", &url, &[("Accept", media::ACCEPT)], &Payload::Empty)?;
    let resp = client.success(url, resp)?;
    let announced = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .filter(|d| is_sha256(d))
        .map(String::from);
    match announced {
        Some(d) => Ok(d),
        None => {
            let (body, _) = client.manifest(tag, None)?;
            Ok(Digest::of(&body).to_string())
        }
    }
}

/// Every tag of `reference`'s repository, in the registry's order.
pub fn list_tags(reference: &ImageRef, opts: &PullOptions) -> Result<Vec<String>, PullError> {
    let client = Client::new(reference, opts)?;
    let first = format!("/v2/{}/tags/list?n={PAGE_SIZE}", client.repository);
    let mut path = first.clone();
    let mut seen = std::collections::BTreeSet::new();
    let mut tags = Vec::new();
    for _ in 0..MAX_PAGES {
        if !seen.insert(path.clone()) {
            return Err(invalid(&client, &path, "its Link header leads in a circle"));
        }
        let mut resp = client.get(&path, Some("application/json"))?;
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let page: Page = resp
            .body_mut()
            .with_config()
            .limit(MAX_PAGE_BYTES)
            .read_json()
            .map_err(|e| invalid(&client, &path, &format!("not a tag list: {e}")))?;
        tags.extend(page.tags.unwrap_or_default());
        if tags.len() > MAX_TAGS {
            return Err(invalid(
                &client,
                &path,
                &format!("more than {MAX_TAGS} tags"),
            ));
        }
        match next {
            None => return Ok(tags),
            Some(link) => match next_page(&link, &client.base, &client.repository) {
                Ok(Some(p)) => path = p,
                Ok(None) => return Ok(tags),
                Err(why) => return Err(invalid(&client, &path, &why)),
            },
        }
    }
    Err(invalid(
        &client,
        &first,
        &format!("its tag list runs past {MAX_PAGES} pages"),
    ))
}

fn invalid(client: &Client, path: &str, why: &str) -> PullError {
    PullError::Status {
        url: format!("{}{path}", client.base),
        status: 200,
        detail: format!(": {why}"),
    }
}

fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The path of the next page from a `Link: <…>; rel="next"` header: a
/// path on the registry itself, of the same repository's tag list. A link
/// to another host, another repository or anything but the tag list is
/// refused (it would carry the registry's credentials elsewhere, or read
/// someone else's tags); `Ok(None)` when no link is `rel="next"`.
pub(super) fn next_page(
    link: &str,
    base: &str,
    repository: &str,
) -> Result<Option<String>, String> {
    for part in link.split(',') {
        let part = part.trim();
        let Some(rest) = part.strip_prefix('<') else {
            continue;
        };
        let Some((target, params)) = rest.split_once('>') else {
            continue;
        };
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        if !is_next {
            continue;
        }
        let path = match target.strip_prefix(base) {
            Some(p) if p.starts_with('/') => p,
            _ if target.starts_with('/') && !target.starts_with("//") => target,
            _ => return Err(format!("its next page <{target}> is not on the registry")),
        };
        let want = format!("/v2/{repository}/tags/list");
        let (p, query) = path.split_once('?').unwrap_or((path, ""));
        if p != want {
            return Err(format!("its next page <{target}> is not {want}"));
        }
        if query
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'#')
        {
            return Err(format!("its next page <{target}> is not a plain query"));
        }
        return Ok(Some(path.to_string()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:5000";

    #[test]
    fn follows_a_relative_or_same_origin_next_link() {
        assert_eq!(
            next_page("</v2/app/tags/list?last=b&n=2>; rel=\"next\"", BASE, "app"),
            Ok(Some("/v2/app/tags/list?last=b&n=2".into()))
        );
        assert_eq!(
            next_page(
                "<http://127.0.0.1:5000/v2/app/tags/list?last=b>; rel=next",
                BASE,
                "app"
            ),
            Ok(Some("/v2/app/tags/list?last=b".into()))
        );
        assert_eq!(
            next_page("</v2/app/tags/list?last=a>; rel=\"prev\"", BASE, "app"),
            Ok(None)
        );
    }

    #[test]
    fn refuses_a_link_elsewhere() {
        for hostile in [
            "<http://evil.example/v2/app/tags/list?last=b>; rel=\"next\"",
            "<//evil.example/v2/app/tags/list>; rel=\"next\"",
            "<http://127.0.0.1:5000.evil.example/v2/app/tags/list>; rel=\"next\"",
            "</v2/other/tags/list?last=b>; rel=\"next\"",
            "</v2/app/manifests/latest>; rel=\"next\"",
            "</v2/app/tags/list/../../other/tags/list>; rel=\"next\"",
            "</v2/app/tags/list?last=a#frag>; rel=\"next\"",
        ] {
            assert!(next_page(hostile, BASE, "app").is_err(), "{hostile}");
        }
    }

    #[test]
    fn only_sha256_digests_are_taken_from_a_header() {
        assert!(is_sha256(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_sha256(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_sha256(&format!("sha256:{}", "a".repeat(63))));
        assert!(!is_sha256("sha512:abc"));
        assert!(!is_sha256("sha256:../../x"));
    }
}
