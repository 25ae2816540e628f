//! Files written by the real sops (3.11.0, `tests/fixtures/sops/`, encrypted
//! for the test identity published in getsops/sops) and files written here
//! (`testing`) decrypt; tampered files, wrong keys and missing MACs are refused.

use std::path::{Path, PathBuf};

use super::testing::{Wrap, Writer};
use super::*;
use crate::parse::Format;

/// The public key of `age.key`.
const RECIPIENT: &str = "age1lzd99uklcjnc0e7d860axevet2cz99ce9pq6tzuzd05l5nr28ams36nvun";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sops")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).expect("fixture")
}

fn keys() -> AgeKeys {
    AgeKeys::parse(&fixture("age.key")).expect("the test key")
}

fn other_keys() -> AgeKeys {
    AgeKeys::parse(&fixture("other.key")).expect("the other test key")
}

fn tree(docs: &[Node]) -> String {
    docs.iter().map(json::to_json).collect()
}

fn plain_yaml(name: &str) -> String {
    tree(&crate::parse::parse(Format::Yaml, &fixture(name)).expect("plain YAML"))
}

fn decrypted(text: &str, keys: Option<&AgeKeys>) -> Result<Plain, String> {
    let docs = parse_any(text).expect("a SOPS file")?;
    decrypt(docs, keys)
}

fn decrypted_tree(text: &str) -> Vec<Node> {
    match decrypted(text, Some(&keys())).expect("decrypts") {
        Plain::Tree(docs) => docs,
        Plain::Data(_) => panic!("a tree was expected"),
    }
}

fn refused(text: &str, keys: Option<&AgeKeys>) -> String {
    let e = decrypted(text, keys).expect_err("refused");
    assert!(!e.contains("s3cr3t"), "plaintext in {e}");
    e
}

fn get<'a>(node: &'a Node, path: &[&str]) -> &'a Value {
    let mut at = node;
    for p in path {
        let Value::Map(entries) = &at.value else {
            panic!("{p}: not a table")
        };
        at = &entries.iter().find(|(k, _)| k.name == *p).expect(p).1;
    }
    &at.value
}

#[test]
fn real_sops_yaml_decrypts_with_its_types_and_positions() {
    let text = fixture("app.sops.yaml");
    let docs = decrypted_tree(&text);
    let env = |k: &str| get(&docs[0], &["containers", "web", "env", k]).clone();
    assert_eq!(env("DB_PASSWORD"), Value::Str("s3cr3t-yaml".into()));
    assert_eq!(env("WORKERS"), Value::Int(4));
    assert_eq!(env("RATIO"), Value::Float(1.5));
    assert_eq!(env("DEBUG"), Value::Bool(true));
    assert_eq!(env("EMPTY"), Value::Str(String::new().into()));
    assert_eq!(env("MULTI"), Value::Str("line one\nline two".into()));
    assert_eq!(
        get(
            &docs[0],
            &["containers", "web", "labels", "team_unencrypted"]
        ),
        &Value::Str("platform".into())
    );
    assert_eq!(tree(&docs), plain_yaml("plain/app.yaml"));
    // The decrypted value stands where its ciphertext stood.
    let line = text
        .lines()
        .position(|l| l.trim_start().starts_with("DB_PASSWORD:"))
        .expect("the line") as u32
        + 1;
    let Value::Map(top) = &docs[0].value else {
        panic!("a table")
    };
    let Value::Map(web) = &top[0].1.value else {
        panic!()
    };
    let Value::Map(web) = &web[0].1.value else {
        panic!()
    };
    let env = web.iter().find(|(k, _)| k.name == "env").expect("env");
    let Value::Map(env) = &env.1.value else {
        panic!()
    };
    assert_eq!(env[0].1.pos.line, line);
}

#[test]
fn real_sops_rules_and_mac_only_encrypted_decrypt() {
    let want = plain_yaml("plain/app.yaml");
    for name in ["regex.sops.yaml", "maconly.sops.yaml"] {
        assert_eq!(tree(&decrypted_tree(&fixture(name))), want, "{name}");
    }
}

#[test]
fn real_sops_multi_document_yaml_decrypts_every_document() {
    // sops writes the metadata into each document.
    let text = fixture("multi.sops.yaml");
    assert_eq!(text.matches("\nsops:").count(), 2, "{text}");
    assert_eq!(tree(&decrypted_tree(&text)), plain_yaml("plain/multi.yaml"));
    let docs = manifest(Format::Yaml, &text, Some(&keys())).expect("decrypts");
    assert_eq!(docs.len(), 2);
}

#[test]
fn real_sops_scalars_of_every_kind_hash_as_sops_hashes_them() {
    // Plaintext ones (unencrypted_regex) and encrypted ones, all in the MAC.
    let docs = decrypted_tree(&fixture("types.sops.yaml"));
    let secret = |k: &str| get(&docs[0], &["secret", k]).clone();
    assert_eq!(secret("int"), Value::Int(42));
    assert_eq!(secret("hex"), Value::Int(31));
    assert_eq!(secret("float"), Value::Float(1.5));
    assert_eq!(secret("whole_float"), Value::Float(2.0));
    assert_eq!(secret("exp"), Value::Float(1000.0));
    assert_eq!(secret("bool"), Value::Bool(false));
    assert_eq!(secret("date"), Value::Str("2026-12-05T00:00:00Z".into()));
    assert_eq!(secret("text"), Value::Str("s3cr3t-types".into()));
    let Value::Seq(list) = secret("list") else {
        panic!("a list")
    };
    let list: Vec<Value> = list.into_iter().map(|n| n.value).collect();
    assert_eq!(
        list,
        [
            Value::Int(1),
            Value::Str("two".into()),
            Value::Float(3.25),
            Value::Bool(false)
        ]
    );
    assert_eq!(get(&docs[0], &["plain", "no"]), &Value::Str("no".into()));
}

#[test]
fn real_sops_toml_is_a_binary_file_parsed_after_decryption() {
    let text = fixture("app.sops.toml");
    assert!(
        crate::parse::parse(Format::Toml, &text).is_err(),
        "sops wrote JSON"
    );
    let docs = manifest(Format::Toml, &text, Some(&keys())).expect("decrypts");
    let plain = crate::parse::parse(Format::Toml, &fixture("plain/app.toml")).expect("TOML");
    assert_eq!(docs, plain, "positions are those of the plaintext");
}

#[test]
fn real_sops_dotenv_json_and_binary_decrypt() {
    let vars = crate::envfile::vars(&fixture("app.sops.env"), "app.sops.env", Some(&keys()))
        .expect("decrypts");
    let want = [
        ("DB_PASSWORD", "s3cr3t-env"),
        ("GREETING", "hello world"),
        ("MULTI", "one\ntwo"),
        ("EMPTY", ""),
    ];
    let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want);

    let json = secret_file(&fixture("config.sops.json"), Some(&keys()))
        .expect("a SOPS file")
        .expect("decrypts");
    let got: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let want: serde_json::Value =
        serde_json::from_str(&fixture("plain/config.json")).expect("JSON");
    assert_eq!(got, want);

    let token = secret_file(&fixture("token.sops.txt"), Some(&keys()))
        .expect("a SOPS file")
        .expect("decrypts");
    assert_eq!(token, fixture("plain/token.txt"));
    // Plain files are not SOPS files.
    assert!(secret_file("hunter2\n", Some(&keys())).is_none());
    assert!(secret_file("{\"a\": 1}", Some(&keys())).is_none());
    assert!(secret_file("sops: is a word\n", Some(&keys())).is_none());
}

/// `text` with the first base64 character after `marker` changed.
fn flip_after(text: &str, marker: &str) -> String {
    let at = text.find(marker).expect("marker") + marker.len();
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("text")
}

#[test]
fn tampered_files_wrong_keys_and_missing_macs_are_refused() {
    let text = fixture("app.sops.yaml");
    // A flipped byte in a value.
    let e = refused(
        &flip_after(&text, "DB_PASSWORD: ENC[AES256_GCM,data:"),
        Some(&keys()),
    );
    assert!(
        e.contains("containers.web.env.DB_PASSWORD") && e.contains("does not decrypt"),
        "{e}"
    );
    // A value moved to another key: its place is part of what is authenticated.
    let swapped = text.replacen("DB_PASSWORD:", "DB_PASSWORX:", 1);
    let e = refused(&swapped, Some(&keys()));
    assert!(
        e.contains("DB_PASSWORX") && e.contains("does not decrypt"),
        "{e}"
    );
    // A wrong key, no key.
    let e = refused(&text, Some(&other_keys()));
    assert!(
        e.contains("no age identity") && e.contains(RECIPIENT),
        "{e}"
    );
    let e = refused(&text, None);
    assert!(e.contains("no age key is configured"), "{e}");
    // No MAC.
    let no_mac: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("mac:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = refused(&no_mac, Some(&keys()));
    assert!(e.contains("no MAC"), "{e}");
    // A value removed, or one left in plaintext changed: the MAC no longer matches.
    let removed: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("RATIO:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = refused(&removed, Some(&keys()));
    assert!(e.contains("MAC mismatch"), "{e}");
    let changed = text.replace("team_unencrypted: platform", "team_unencrypted: intruder");
    assert!(refused(&changed, Some(&keys())).contains("MAC mismatch"));
    // The MAC itself tampered with.
    let e = refused(
        &flip_after(&text, "mac: ENC[AES256_GCM,data:"),
        Some(&keys()),
    );
    assert!(e.contains("MAC"), "{e}");
    // Another lastmodified: the MAC's additional data.
    let later = text.replace("lastmodified: \"2026", "lastmodified: \"2027");
    assert!(refused(&later, Some(&keys())).contains("MAC"));

    // The same in the other stores.
    let env = fixture("app.sops.env");
    let e = crate::envfile::vars(
        &flip_after(&env, "DB_PASSWORD=ENC[AES256_GCM,data:"),
        "app.sops.env",
        Some(&keys()),
    )
    .expect_err("refused");
    assert!(
        e.contains("app.sops.env") && e.contains("DB_PASSWORD") && !e.contains("s3cr3t"),
        "{e}"
    );
    let no_mac: String = env
        .lines()
        .filter(|l| !l.starts_with("sops_mac="))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = crate::envfile::vars(&no_mac, "app.sops.env", Some(&keys())).expect_err("refused");
    assert!(e.contains("no MAC"), "{e}");
    let json = fixture("config.sops.json");
    let e = refused(&json.replacen("\"user\"", "\"usr\"", 1), Some(&keys()));
    assert!(e.contains("usr"), "{e}");
    let e = refused(&fixture("token.sops.txt"), Some(&other_keys()));
    assert!(e.contains("no age identity"), "{e}");
}

#[test]
fn files_written_here_decrypt_and_agree_with_the_reader() {
    for wrap in [Wrap::Crate, Wrap::Tool] {
        let mut w = Writer::new(RECIPIENT, wrap);
        let plain = fixture("plain/app.yaml");
        let text = w.yaml(&plain);
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(tree(&decrypted_tree(&text)), plain_yaml("plain/app.yaml"));

        let plain = fixture("plain/config.json");
        let text = w.json(&plain);
        let got: serde_json::Value = serde_json::from_str(
            &secret_file(&text, Some(&keys()))
                .expect("SOPS")
                .expect("decrypts"),
        )
        .expect("JSON");
        assert_eq!(
            got,
            serde_json::from_str::<serde_json::Value>(&plain).expect("JSON")
        );

        let text = w.binary(&fixture("plain/app.toml"));
        let docs = manifest(Format::Toml, &text, Some(&keys())).expect("decrypts");
        let want = crate::parse::parse(Format::Toml, &fixture("plain/app.toml")).expect("TOML");
        assert_eq!(docs, want);

        let text = w.dotenv(&[("A", "1"), ("SECRET", "s3cr3t\nmore"), ("E", "")]);
        let vars = crate::envfile::vars(&text, "x.env", Some(&keys())).expect("decrypts");
        assert_eq!(
            vars,
            [
                ("A".to_string(), "1".to_string()),
                ("SECRET".into(), "s3cr3t\nmore".into()),
                ("E".into(), String::new())
            ]
        );
        // Written for another recipient: the test key cannot open it.
        let other = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq";
        let mut w = Writer::new(other, wrap);
        let e = refused(&w.yaml("a: s3cr3t\n"), Some(&keys()));
        assert!(e.contains(other), "{e}");
    }
}

#[test]
fn env_and_secret_files_in_every_store_give_what_their_plaintext_gives() {
    let k = keys();
    let mut w = Writer::new(RECIPIENT, Wrap::Crate);
    let want = vec![
        ("A".to_string(), "1".to_string()),
        ("B".to_string(), "s3cr3t two".to_string()),
    ];
    // An env file encrypted whole (binary), or as a YAML or JSON table.
    for text in [
        w.binary("A=1\nexport B=\"s3cr3t two\"\n"),
        w.yaml("A: 1\nB: s3cr3t two\n"),
        w.json("{\"A\": 1, \"B\": \"s3cr3t two\"}"),
    ] {
        assert_eq!(
            crate::envfile::vars(&text, "x.env", Some(&k)),
            Ok(want.clone()),
            "{text}"
        );
    }
    let nested = w.yaml("A:\n  deeper: s3cr3t\n");
    let e = crate::envfile::vars(&nested, "x.env", Some(&k)).expect_err("not flat");
    assert!(
        e.contains("x.env") && e.contains("A:") && !e.contains("s3cr3t"),
        "{e}"
    );

    // A secret file encrypted as YAML: the same tree, written again.
    let plain = "user: app\npassword: s3cr3t\nports: [1, 2]\nnested:\n  - {a: true}\n";
    let text = secret_file(&w.yaml(plain), Some(&k))
        .expect("SOPS")
        .expect("decrypts");
    assert_eq!(
        tree(&crate::parse::parse(Format::Yaml, &text).expect("YAML")),
        tree(&crate::parse::parse(Format::Yaml, plain).expect("YAML"))
    );
    // A dotenv secret file: its lines, new lines escaped as sops writes them.
    let text = secret_file(&w.dotenv(&[("A", "1"), ("B", "x\ny")]), Some(&k))
        .expect("SOPS")
        .expect("decrypts");
    assert_eq!(text, "A=1\nB=x\\ny\n");
}

#[test]
fn hostile_metadata_is_refused_not_trusted() {
    let k = keys();
    for (text, why) in [
        ("a: x\nsops: {}\n", "not encrypted for any age recipient"),
        ("a: x\nsops:\n  age: 3\n", "must be a list"),
        ("a: x\nsops:\n  age: [{recipient: r}]\n", "no enc"),
        (
            "a: x\nsops:\n  age: [{recipient: r, enc: garbage}]\n",
            "no age identity",
        ),
        ("a: x\nsops:\n  pgp: [{fp: F}]\n", "only pgp"),
        (
            "a: x\nsops:\n  key_groups: [{age: []}, {age: []}]\n",
            "Shamir",
        ),
        (
            "a: x\nsops:\n  encrypted_suffix: _s\n  unencrypted_suffix: _u\n",
            "more than one",
        ),
        (
            "a: x\nsops:\n  encrypted_comment_regex: x\n",
            "not supported",
        ),
        (
            "a: x\nsops:\n  encrypted_regex: \"(\"\n",
            "regular expression",
        ),
    ] {
        let e = refused(text, Some(&k));
        assert!(e.contains(why), "{text}: {e}");
    }
    // Flattened dotenv metadata cannot ask for a huge list.
    let e = decrypt_dotenv(
        "A=x\nsops_mac=\nsops_age__list_99999999999__map_enc=x\n",
        Some(&k),
    )
    .expect_err("refused");
    assert!(e.contains("malformed"), "{e}");
    // Values that are not sops's, where encrypted ones belong.
    let mut w = Writer::new(RECIPIENT, Wrap::Crate);
    let text = w.yaml("a: s3cr3t\nb: 2\n");
    let e = refused(
        &text.replacen("ENC[AES256_GCM,data:", "ENC[AES128_GCM,data:", 1),
        Some(&k),
    );
    assert!(e.contains("not a SOPS value"), "{e}");
    let e = refused(&text.replacen(",type:str]", ",type:weird]", 1), Some(&k));
    assert!(
        e.contains("does not decrypt") || e.contains("unknown"),
        "{e}"
    );
    // A "data key" of another length, wrapped for the right key.
    let text = w.dotenv(&[("A", "s3cr3t")]);
    for len in [16, 33, 4096] {
        let bad = w.wrap_bytes(&vec![7; len]).replace('\n', "\\n");
        let forged: String = text
            .lines()
            .map(|l| match l.strip_prefix("sops_age__list_0__map_enc=") {
                Some(_) => format!("sops_age__list_0__map_enc={bad}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        let e = decrypt_dotenv(&forged, Some(&k)).expect_err("refused");
        assert!(e.contains("no age identity"), "{len}: {e}");
    }
    assert!(decrypt_dotenv(&text, Some(&k)).is_ok());
    assert!(AgeKeys::parse("not a key").is_err());
    assert!(AgeKeys::parse("# only a comment\n").is_err());
}

#[test]
fn the_loader_decrypts_manifests_env_files_and_secrets_and_refuses_with_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::copy(fixtures().join("app.sops.yaml"), dir.join("app.sops.yaml")).expect("copy");
    let mut w = Writer::new(RECIPIENT, Wrap::Crate);
    std::fs::write(
        dir.join("api.sops.toml"),
        w.binary(
            "[secrets.token]\nfile = \"./token.sops.txt\"\n\n[containers.api]\nimage = \"busybox\"\nenv_file = \"./api.sops.env\"\nsecrets = [\"token\"]\n",
        ),
    )
    .expect("write");
    std::fs::copy(fixtures().join("app.sops.env"), dir.join("api.sops.env")).expect("copy");
    std::fs::copy(
        fixtures().join("token.sops.txt"),
        dir.join("token.sops.txt"),
    )
    .expect("copy");
    let options = crate::LoadOptions {
        age: Some(keys()),
        ..Default::default()
    };
    let state = crate::load_with(&[dir], None, &options).expect("loads");
    let web = &state.containers["web"];
    assert_eq!(
        web.spec.env.get("DB_PASSWORD").map(String::as_str),
        Some("s3cr3t-yaml")
    );
    assert_eq!(web.spec.env.get("WORKERS").map(String::as_str), Some("4"));
    let api = &state.containers["api"];
    assert_eq!(
        api.spec.env.get("DB_PASSWORD").map(String::as_str),
        Some("s3cr3t-env")
    );
    assert_eq!(
        api.spec.env.get("MULTI").map(String::as_str),
        Some("one\ntwo")
    );

    // Without the key, each encrypted file is a diagnostic naming it.
    let diags = crate::load_with(&[dir], None, &crate::LoadOptions::default())
        .expect_err("refused")
        .to_string();
    assert!(!diags.contains("s3cr3t"), "{diags}");
    for name in ["app.sops.yaml", "api.sops.toml"] {
        assert!(
            diags
                .lines()
                .any(|l| l.contains(name) && l.contains("no age key")),
            "{diags}"
        );
    }
    // A tampered env file: the manifest that reads it says so.
    let env =
        fixture("app.sops.env").replacen("sops_lastmodified=2026", "sops_lastmodified=2027", 1);
    std::fs::write(dir.join("api.sops.env"), env).expect("write");
    let diags = crate::load_with(&[dir], None, &options)
        .expect_err("refused")
        .to_string();
    assert!(
        diags.lines().any(|l| l.contains("api.sops.toml")
            && l.contains("api.sops.env")
            && l.contains("MAC")),
        "{diags}"
    );
    assert!(!diags.contains("s3cr3t"), "{diags}");
}

#[test]
fn compose_env_files_and_dot_env_decrypt_like_any_env_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut w = Writer::new(RECIPIENT, Wrap::Crate);
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  web:\n    image: busybox:${TAG}\n    env_file: ./web.sops.env\n",
    )
    .expect("write");
    std::fs::write(dir.join(".env"), w.dotenv(&[("TAG", "1.36")])).expect("write");
    std::fs::write(
        dir.join("web.sops.env"),
        w.dotenv(&[("PASSWORD", "s3cr3t")]),
    )
    .expect("write");
    let options = crate::LoadOptions {
        age: Some(keys()),
        ..Default::default()
    };
    let state = crate::load_with(&[dir], None, &options).expect("loads");
    let web = &state.containers["web"].spec;
    assert_eq!(web.image.to_string(), "docker.io/library/busybox:1.36");
    assert_eq!(web.env["PASSWORD"], "s3cr3t");
    let diags = crate::load_with(&[dir], None, &crate::LoadOptions::default())
        .expect_err("no key")
        .to_string();
    assert!(
        diags.contains("\".env\": cannot decrypt this SOPS file"),
        "{diags}"
    );
    assert!(!diags.contains("s3cr3t"), "{diags}");
}
