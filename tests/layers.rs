//! The module layers of `agent/src` and `runtime/src` point one way: no
//! module names another that, directly or round a longer loop, names it
//! back. A cycle means two layers that cannot be read, tested or changed
//! apart; this test lists every one it finds, with the edges that close it.
//!
//! The graph is read from the sources, by a small Rust lexer (no parser
//! crate): a module is a file (`a/b.rs` or `a/b/mod.rs` is `a::b`). A module
//! names another when its code holds a path that starts with `crate::`,
//! `super::` or `self::` — in a `use` (groups included) or anywhere in an
//! expression or a type — and the longest prefix of that path which is a
//! module is the other one. A parent declaring or re-exporting its own
//! descendants is structure, not an edge, and the crate root sits above
//! everything. Test code (`#[cfg(test)]` items and modules, and the files
//! those declare) is left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One token of Rust source, as far as paths are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    /// Any other punctuation character.
    Punct(char),
    /// A literal or a lifetime: never part of a path.
    Other,
}

/// Splits `src` into tokens, dropping comments and the insides of string,
/// character and number literals (so a path in a string or a comment is
/// not an edge).
fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let ident_char = |ch: char| ch == '_' || ch.is_alphanumeric();
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1);
            out.push(Tok::Other);
        } else if ch == '\'' {
            // A character literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
            out.push(Tok::Other);
        } else if ch.is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push(Tok::Other);
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            match (word.as_str(), c.get(i)) {
                // Raw strings (r"…", r#"…"#, br"…", cr"…").
                ("r" | "br" | "cr", Some('"' | '#'))
                    if c.get(i) == Some(&'"')
                        || c[i..].iter().find(|&&x| x != '#') == Some(&'"') =>
                {
                    let mut hashes = 0;
                    while c.get(i) == Some(&'#') {
                        hashes += 1;
                        i += 1;
                    }
                    i += 1; // the opening quote
                    loop {
                        if i >= c.len() {
                            break;
                        }
                        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                            i += 1 + hashes;
                            break;
                        }
                        i += 1;
                    }
                    out.push(Tok::Other);
                }
                // Byte and C strings (b"…", c"…") and byte characters (b'a').
                ("b" | "c", Some('"')) => {
                    i = skip_string(&c, i + 1);
                    out.push(Tok::Other);
                }
                ("b", Some('\'')) => {
                    i += 1;
                    while i < c.len() && c[i] != '\'' {
                        if c[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                    out.push(Tok::Other);
                }
                // A raw identifier: r#type.
                ("r", Some('#')) => {
                    i += 1;
                    let start = i;
                    while i < c.len() && ident_char(c[i]) {
                        i += 1;
                    }
                    out.push(Tok::Ident(c[start..i].iter().collect()));
                }
                _ => out.push(Tok::Ident(word)),
            }
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// Skips a string's body from just after its opening quote; returns the
/// index after its closing quote.
fn skip_string(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// What one file says: the paths it names (with the module, file module
/// plus inline modules, each was named from), and the children it declares
/// for tests only.
#[derive(Debug, Default)]
struct FileRefs {
    paths: Vec<(Vec<String>, Vec<String>)>,
    test_children: Vec<Vec<String>>,
}

/// Reads the paths a file of module `module` names.
fn scan(module: &[String], toks: &[Tok]) -> FileRefs {
    let mut refs = FileRefs::default();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut cfg_test = false;
    let mut i = 0;
    let here = |inline: &[(String, usize)]| -> Vec<String> {
        let mut m = module.to_vec();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('#') => {
                // An attribute: #[…] or #![…].
                let mut j = i + 1;
                if toks.get(j) == Some(&Tok::Punct('!')) {
                    j += 1;
                }
                if toks.get(j) != Some(&Tok::Punct('[')) {
                    i += 1;
                    continue;
                }
                let end = matching(toks, j);
                let inside = &toks[j + 1..end];
                if inside
                    == [
                        Tok::Ident("cfg".into()),
                        Tok::Punct('('),
                        Tok::Ident("test".into()),
                        Tok::Punct(')'),
                    ]
                {
                    cfg_test = true;
                }
                i = end + 1;
            }
            _ if cfg_test => {
                // The item the attribute is on, left out whole.
                cfg_test = false;
                let mut j = i;
                if toks.get(j) == Some(&Tok::Ident("pub".into())) {
                    j += 1;
                    if toks.get(j) == Some(&Tok::Punct('(')) {
                        j = matching(toks, j) + 1;
                    }
                }
                if toks.get(j) == Some(&Tok::Ident("mod".into()))
                    && toks.get(j + 2) == Some(&Tok::Punct(';'))
                    && let Some(Tok::Ident(name)) = toks.get(j + 1)
                {
                    let mut child = here(&inline);
                    child.push(name.clone());
                    refs.test_children.push(child);
                }
                i = item_end(toks, i);
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(w) if w == "use" => {
                let mut j = i + 1;
                if toks.get(j) == Some(&Tok::PathSep) {
                    j += 1;
                }
                let mut paths = Vec::new();
                j = use_tree(toks, j, Vec::new(), &mut paths);
                let from = here(&inline);
                refs.paths
                    .extend(paths.into_iter().map(|p| (from.clone(), p)));
                i = j;
            }
            Tok::Ident(w)
                if matches!(w.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1) == Some(&Tok::PathSep)
                    // `$crate::` in a macro is the defining crate's root.
                    && (i == 0 || toks[i - 1] != Tok::Punct('$')) =>
            {
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while toks.get(j) == Some(&Tok::PathSep) {
                    match toks.get(j + 1) {
                        Some(Tok::Ident(seg)) => {
                            path.push(seg.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                refs.paths.push((here(&inline), path));
                i = j;
            }
            _ => i += 1,
        }
    }
    refs
}

/// The index of the bracket that closes the one at `open`.
fn matching(toks: &[Tok], open: usize) -> usize {
    let (o, c) = match toks[open] {
        Tok::Punct('(') => ('(', ')'),
        Tok::Punct('[') => ('[', ']'),
        _ => ('{', '}'),
    };
    let mut depth = 0;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if *t == Tok::Punct(o) {
            depth += 1;
        } else if *t == Tok::Punct(c) {
            depth -= 1;
            if depth == 0 {
                return k;
            }
        }
    }
    toks.len() - 1
}

/// The index after the item that starts at `i`: its `;`, or its body's `}`.
fn item_end(toks: &[Tok], mut i: usize) -> usize {
    while i < toks.len() {
        match toks[i] {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') => return matching(toks, i) + 1,
            Tok::Punct('(' | '[') => i = matching(toks, i) + 1,
            _ => i += 1,
        }
    }
    i
}

/// Reads a use tree from `i`, pushing every full path it names onto
/// `out`; returns the index after it (after the `;` at the top).
fn use_tree(
    toks: &[Tok],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(i) {
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = use_tree(toks, i, prefix.clone(), out),
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                out.push(prefix);
                return i + 1;
            }
            Some(Tok::Ident(seg)) => {
                prefix.push(seg.clone());
                i += 1;
                if toks.get(i) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                // `as name`
                if toks.get(i) == Some(&Tok::Ident("as".into())) {
                    i += 2;
                }
                out.push(prefix);
                if toks.get(i) == Some(&Tok::Punct(';')) {
                    i += 1;
                }
                return i;
            }
            Some(Tok::Punct(';')) => return i + 1,
            _ => return i + 1,
        }
    }
}

/// A crate's module graph.
#[derive(Debug)]
struct Graph {
    /// Every module (`""` is the root), by path.
    modules: BTreeSet<String>,
    /// Who names whom.
    edges: BTreeMap<String, BTreeSet<String>>,
}

/// The module path of the file at `rel` (relative to `src/`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|l| matches!(l.as_str(), "mod" | "lib" | "main"))
    {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Reads `src` into its module graph.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut scanned = Vec::new();
    let mut test_only: Vec<String> = Vec::new();
    for file in &files {
        let module = module_of(file.strip_prefix(src).expect("under src"));
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let refs = scan(&module, &lex(&text));
        test_only.extend(refs.test_children.iter().map(|c| c.join("::")));
        scanned.push((module.join("::"), refs));
    }
    let is_test = |m: &str| {
        test_only
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    };
    let modules: BTreeSet<String> = scanned
        .iter()
        .map(|(m, _)| m.clone())
        .filter(|m| !is_test(m))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, refs) in &scanned {
        if !modules.contains(module) || module.is_empty() {
            continue;
        }
        for (from, path) in &refs.paths {
            let Some(target) = resolve(&modules, from, path) else {
                continue;
            };
            let descendant = target == *module || target.starts_with(&format!("{module}::"));
            if !descendant {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    Graph { modules, edges }
}

/// The module a path names, seen from module `from` (which may be an
/// inline module inside a file): the longest prefix of the full path that
/// is a module. None for paths that are not `crate::`, `super::` or
/// `self::` ones (other crates, or names in scope).
fn resolve(modules: &BTreeSet<String>, from: &[String], path: &[String]) -> Option<String> {
    let (mut full, rest): (Vec<String>, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.to_vec(), &path[1..]),
        Some("super") => {
            let mut base = from.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        _ => return None,
    };
    // `use super::{self, x}`: a `self` inside a path names its prefix.
    full.extend(rest.iter().filter(|s| *s != "self").cloned());
    (0..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for m in &g.modules {
        if !t.index.contains_key(m.as_str()) {
            t.visit(m);
        }
    }
    t.out.sort();
    t.out
}

/// The cycles of `krate`'s src as text, each module with the edges that
/// stay inside its cycle; empty when there are none.
fn report(krate: &str) -> (String, usize) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(krate)
        .join("src");
    let g = graph(&src);
    let found = cycles(&g);
    let mut text = format!(
        "{krate}/src: {} modules, {} edges, {} cycle(s)\n",
        g.modules.len(),
        g.edges.values().map(BTreeSet::len).sum::<usize>(),
        found.len()
    );
    for comp in &found {
        text += &format!("  cycle: {}\n", comp.join(", "));
        for m in comp {
            let inside: Vec<&str> = g.edges[m]
                .iter()
                .filter(|t| comp.contains(t))
                .map(String::as_str)
                .collect();
            text += &format!("    {m} -> {}\n", inside.join(", "));
        }
    }
    (text, found.len())
}

#[test]
fn agent_layers_point_one_way() {
    let (text, n) = report("agent");
    eprint!("{text}");
    assert_eq!(n, 0, "module cycles in agent/src:\n{text}");
}

/// Beyond cycles, the order of `agent/src`'s layers (see its lib.rs):
/// handlers (`cmd`) over everything; the daemon over the configuration,
/// which is over the sources; the clap types (`cli`) over nothing but the
/// log format. Nothing names `cmd` but the crate root.
#[test]
fn agent_layers_are_in_order() {
    let allowed: &[(&str, &[&str])] = &[
        (
            "cmd",
            &["cli", "daemon", "config", "source", "logging", "secret_key"],
        ),
        ("cli", &["logging"]),
        ("daemon", &["config", "source", "secret_key"]),
        ("secret_key", &[]),
        ("config", &["source"]),
        ("source", &[]),
        ("logging", &[]),
    ];
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agent/src");
    let g = graph(&src);
    let top = |m: &str| m.split("::").next().unwrap_or_default().to_string();
    let mut wrong = Vec::new();
    for (from, targets) in &g.edges {
        for to in targets {
            let (a, b) = (top(from), top(to));
            if a == b {
                continue;
            }
            let ok = allowed
                .iter()
                .find(|(m, _)| *m == a)
                .is_some_and(|(_, may)| may.contains(&b.as_str()));
            if !ok {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "agent/src names a layer above, or one it has no business with:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn runtime_layers_point_one_way() {
    let (text, n) = report("runtime");
    eprint!("{text}");
    assert_eq!(n, 0, "module cycles in runtime/src:\n{text}");
}

/// The reader itself: groups, `super`, `self`, inline and test modules,
/// comments and strings.
#[test]
fn the_reader_finds_edges_where_rustc_would() {
    let modules: BTreeSet<String> = ["", "a", "a::b", "c", "c::d", "e"]
        .into_iter()
        .map(String::from)
        .collect();
    let m = |s: &str| -> Vec<String> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split("::").map(String::from).collect()
        }
    };
    let named = |module: &str, src: &str| -> BTreeSet<String> {
        let refs = scan(&m(module), &lex(src));
        refs.paths
            .iter()
            .filter_map(|(from, p)| resolve(&modules, from, p))
            .collect()
    };
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };

    assert_eq!(
        named(
            "a::b",
            "use crate::{c::d::Thing, e};\nuse super::super::c as x;"
        ),
        set(&["c::d", "e", "c"])
    );
    assert_eq!(
        named("a::b", "fn f() { super::helper(); crate::e::go::<u8>() }"),
        set(&["a", "e"])
    );
    assert_eq!(named("a", "use self::b::X; pub use b::Y;"), set(&["a::b"]));
    assert_eq!(
        named(
            "c",
            "mod inner { use super::d::X; fn g() { super::super::e::f() } }"
        ),
        set(&["c::d", "e"])
    );
    assert_eq!(
        named(
            "c",
            "// crate::a::x\n/* crate::e /* nested */ crate::a */\nconst S: &str = \"crate::a\";\nconst R: &str = r#\"crate::e\"#;\nfn f<'a>(x: &'a u8) -> char { 'x' }"
        ),
        set(&[])
    );
    assert_eq!(
        named(
            "c",
            "#[cfg(test)]\nmod tests { use crate::a::b; }\n#[cfg(test)]\nuse crate::e;\nuse crate::a;"
        ),
        set(&["a"])
    );
    let refs = scan(&m("c"), &lex("#[cfg(test)]\nmod testing;\nmod d;"));
    assert_eq!(refs.test_children, [m("c::testing")]);
}
