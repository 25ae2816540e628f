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

    /// A registry on loopback answering each request with `answer(method,
    /// path)`: status, headers, body. Serves until the test ends.
    fn registry(
        answer: impl Fn(&str, &str) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + 'static,
    ) -> ImageRef {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut words = line.split_whitespace();
                let (method, path) = (
                    words.next().unwrap_or("").to_string(),
                    words.next().unwrap_or("").to_string(),
                );
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                }
                let (status, headers, body) = answer(&method, &path);
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                if method != "HEAD" {
                    let _ = stream.write_all(&body);
                }
            }
        });
        moor_spec::reference::parse(&format!("127.0.0.1:{port}/app:1")).unwrap()
    }

    fn tags_page(tags: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "name": "app", "tags": tags })).unwrap()
    }

    #[test]
    fn a_tag_list_is_read_page_after_page() {
        let r = registry(|_, path| match path {
            "/v2/app/tags/list?n=1000" => (
                200,
                vec![(
                    "Link".into(),
                    "</v2/app/tags/list?last=b&n=1000>; rel=\"next\"".into(),
                )],
                tags_page(&["a", "b"]),
            ),
            "/v2/app/tags/list?last=b&n=1000" => (200, vec![], tags_page(&["c"])),
            _ => (404, vec![], Vec::new()),
        });
        let tags = list_tags(&r, &PullOptions::default()).unwrap();
        assert_eq!(tags, ["a", "b", "c"]);
    }

    #[test]
    fn a_hostile_tag_list_is_refused() {
        // A Link back to where it was: refused rather than followed forever.
        let r = registry(|_, _| {
            (
                200,
                vec![(
                    "Link".into(),
                    "</v2/app/tags/list?n=1000>; rel=\"next\"".into(),
                )],
                tags_page(&["a"]),
            )
        });
        let e = list_tags(&r, &PullOptions::default()).unwrap_err();
        assert!(e.to_string().contains("in a circle"), "{e}");
        // Pages that never end.
        let r = registry(|_, path| {
            let n: u64 = path
                .rsplit('=')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (
                200,
                vec![(
                    "Link".into(),
                    format!("</v2/app/tags/list?last={}>; rel=\"next\"", n + 1),
                )],
                tags_page(&["a"]),
            )
        });
        let e = list_tags(&r, &PullOptions::default()).unwrap_err();
        assert!(e.to_string().contains("past 100 pages"), "{e}");
        // A Link to another host.
        let r = registry(|_, _| {
            (
                200,
                vec![(
                    "Link".into(),
                    "<http://198.51.100.1/v2/app/tags/list>; rel=\"next\"".into(),
                )],
                tags_page(&["a"]),
            )
        });
        let e = list_tags(&r, &PullOptions::default()).unwrap_err();
        assert!(e.to_string().contains("is not on the registry"), "{e}");
        // Not JSON, or too large.
        let r = registry(|_, _| (200, vec![], b"<html>".to_vec()));
        let e = list_tags(&r, &PullOptions::default()).unwrap_err();
        assert!(e.to_string().contains("not a tag list"), "{e}");
        let r = registry(|_, _| (200, vec![], vec![b' '; (MAX_PAGE_BYTES + 1) as usize]));
        assert!(list_tags(&r, &PullOptions::default()).is_err());
    }

    #[test]
    fn a_head_gives_the_digest_and_a_missing_or_odd_header_is_checked_by_hashing() {
        let body = br#"{"schemaVersion":2}"#.to_vec();
        let real = Digest::of(&body).to_string();
        let good = real.clone();
        let r = registry(move |method, _| {
            assert_eq!(method, "HEAD", "a digest in the header needs no GET");
            (
                200,
                vec![("Docker-Content-Digest".into(), good.clone())],
                Vec::new(),
            )
        });
        assert_eq!(head_digest(&r, &PullOptions::default()).unwrap(), real);
        // No header (or not a sha256 one): the manifest is fetched and hashed.
        for header in [None, Some("sha256:../../etc"), Some("md5:abc")] {
            let b = body.clone();
            let r = registry(move |_, _| {
                let h = header
                    .map(|h| vec![("Docker-Content-Digest".to_string(), h.to_string())])
                    .unwrap_or_default();
                (200, h, b.clone())
            });
            match (header, head_digest(&r, &PullOptions::default())) {
                // A GET whose header names another sha256 digest is a lie, refused.
                (Some("sha256:../../etc"), Err(e)) => {
                    assert!(e.to_string().contains("hashes to"), "{e}")
                }
                (Some("sha256:../../etc"), Ok(d)) => panic!("a lying header gave {d}"),
                (_, r) => assert_eq!(r.unwrap(), real, "{header:?}"),
            }
        }
        // An error status is an error.
        let r = registry(|_, _| (500, vec![], Vec::new()));
        let e = head_digest(&r, &PullOptions::default()).unwrap_err();
        assert!(e.to_string().contains("500"), "{e}");
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
