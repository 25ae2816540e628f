//! `.dockerignore`, with Docker's semantics (moby `patternmatcher` and its
//! `ignorefile` reader), not gitignore's:
//!
//! - one pattern a line; a line starting with `#` is a comment (only in the
//!   first column); blanks around a pattern are trimmed;
//! - `!` makes an exception; the last pattern that matches a path decides;
//! - patterns are cleaned (`a/../b` is `b`) and anchored at the context's
//!   root: a leading `/` means nothing, `foo` does not match `x/foo`;
//! - `*` and `?` do not cross `/`; `**` crosses any number of directories
//!   (`**/x`, `a/**/b`, `a/**`); `[…]` is a character class; `\` escapes;
//! - a path is excluded when it or one of its parent directories matches
//!   ([`Ignore::excludes`]);
//! - the walk does not enter an excluded directory unless an exception
//!   pattern, as written, starts with that directory's path
//!   ([`Ignore::must_enter`]): `dir` with `!dir/keep` keeps `dir/keep`,
//!   but `dir` with `!**/keep` does not (Docker's behaviour, kept).
//!
//! Start at [`Ignore::parse`].

/// The longest pattern accepted, in bytes: `PATH_MAX`, the longest path a
/// pattern could ever be matched against.
pub const MAX_PATTERN: usize = 4096;

/// A `.dockerignore` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A line that is just `!`.
    #[error(".dockerignore line {line}: illegal exclusion pattern: \"!\"")]
    LoneBang {
        /// 1-based line.
        line: usize,
    },
    /// A pattern longer than [`MAX_PATTERN`].
    #[error(".dockerignore line {line}: pattern longer than {limit} bytes")]
    TooLong {
        /// 1-based line.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// A malformed pattern (an unclosed `[`, a trailing `\`).
    #[error(".dockerignore line {line}: syntax error in pattern {pattern:?}")]
    BadPattern {
        /// 1-based line.
        line: usize,
        /// The pattern.
        pattern: String,
    },
}

/// The patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Cleaned, without the `!`.
    text: String,
    exclusion: bool,
    how: How,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum How {
    /// The whole path equals the pattern.
    Exact,
    /// `literal/**`: the path starts with the literal part.
    Prefix(String),
    /// `**literal`: the path ends with the literal part (or, when that
    /// starts with `/`, equals the rest).
    Suffix(String),
    /// Anything else, as tokens of moby's regular expression.
    Tokens(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    One,
    /// `**` followed by more: any run of whole directories, or none.
    Dirs,
    /// `**` at the end after wildcards: anything.
    Rest,
    /// `[…]`: one character (any, `/` included) in or not in the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Ignore {
    /// Reads a `.dockerignore`'s text.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let mut patterns = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            let raw = if i == 0 {
                raw.strip_prefix('\u{feff}').unwrap_or(raw)
            } else {
                raw
            };
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            if p.len() > MAX_PATTERN {
                return Err(IgnoreError::TooLong {
                    line,
                    limit: MAX_PATTERN,
                });
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
                if p.is_empty() {
                    return Err(IgnoreError::LoneBang { line });
                }
            }
            let mut text = clean(p);
            if text.len() > 1 && text.starts_with('/') {
                text.remove(0);
            }
            if !valid(&text) {
                return Err(IgnoreError::BadPattern {
                    line,
                    pattern: raw.trim().to_owned(),
                });
            }
            let how = compile(&text);
            patterns.push(Pattern {
                text,
                exclusion,
                how,
            });
        }
        Ok(Ignore { patterns })
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context, `/`-separated, no leading
    /// `/`) is excluded: the last pattern matching it or a parent decides.
    pub fn excludes(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rfind('/') {
            Some(at) => {
                let parent = &path[..at];
                parent
                    .match_indices('/')
                    .map(|(i, _)| &parent[..i])
                    .chain(std::iter::once(parent))
                    .collect()
            }
            None => Vec::new(),
        };
        let mut excluded = false;
        for p in &self.patterns {
            // An inclusion cannot change an excluded path, nor an
            // exception an included one.
            if p.exclusion != excluded {
                continue;
            }
            let hit = p.matches(path) || parents.iter().any(|d| p.matches(d));
            if hit {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// Whether the walk must enter the excluded directory `dir`: an
    /// exception pattern starts with `dir/`.
    pub fn must_enter(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&prefix))
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.how {
            How::Exact => path == self.text,
            How::Prefix(prefix) => path.starts_with(prefix.as_str()),
            How::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            How::Tokens(toks) => {
                let chars: Vec<char> = path.chars().collect();
                let mut memo = vec![None; (toks.len() + 1) * (chars.len() + 1)];
                match_at(toks, &chars, 0, 0, &mut memo)
            }
        }
    }
}

/// Whether `toks[t..]` matches `path[p..]` entirely; `memo` keeps failures
/// and successes so that a hostile pattern (`*a*a*a*…`) stays linear-ish.
fn match_at(toks: &[Tok], path: &[char], t: usize, p: usize, memo: &mut [Option<bool>]) -> bool {
    let key = t * (path.len() + 1) + p;
    if let Some(known) = memo[key] {
        return known;
    }
    let result = match toks.get(t) {
        None => p == path.len(),
        Some(Tok::Lit(c)) => path.get(p) == Some(c) && match_at(toks, path, t + 1, p + 1, memo),
        Some(Tok::One) => {
            path.get(p).is_some_and(|c| *c != '/') && match_at(toks, path, t + 1, p + 1, memo)
        }
        Some(Tok::Class { negated, ranges }) => {
            path.get(p)
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c)) != *negated)
                && match_at(toks, path, t + 1, p + 1, memo)
        }
        Some(Tok::Star) => {
            let mut q = p;
            loop {
                if match_at(toks, path, t + 1, q, memo) {
                    break true;
                }
                if q == path.len() || path[q] == '/' {
                    break false;
                }
                q += 1;
            }
        }
        Some(Tok::Rest) => (p..=path.len()).any(|q| match_at(toks, path, t + 1, q, memo)),
        Some(Tok::Dirs) => {
            match_at(toks, path, t + 1, p, memo)
                || (p..path.len())
                    .filter(|q| path[*q] == '/')
                    .any(|q| match_at(toks, path, t + 1, q + 1, memo))
        }
    };
    memo[key] = Some(result);
    result
}

/// moby's `Pattern.compile`: which kind of match, and the tokens of its
/// regular expression.
fn compile(text: &str) -> How {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut kind = Kind::Exact;
    let mut toks = Vec::new();
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        let at_start = std::mem::replace(&mut first, false);
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        toks.push(Tok::Rest);
                        kind = Kind::Regexp;
                    }
                } else {
                    toks.push(Tok::Dirs);
                    kind = Kind::Regexp;
                }
                if at_start {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                toks.push(Tok::Star);
                kind = Kind::Regexp;
            }
            '?' => {
                toks.push(Tok::One);
                kind = Kind::Regexp;
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    toks.push(Tok::Lit(next));
                    kind = Kind::Regexp;
                    i += 1;
                }
                None => toks.push(Tok::Lit('\\')),
            },
            ']' => {
                toks.push(Tok::Lit(']'));
                kind = Kind::Regexp;
            }
            '[' => {
                kind = Kind::Regexp;
                let (tok, next) = class(&chars, i);
                toks.push(tok);
                i = next;
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    match kind {
        Kind::Exact => How::Exact,
        Kind::Prefix => How::Prefix(text[..text.len() - 2].to_owned()),
        Kind::Suffix => How::Suffix(text[2..].to_owned()),
        Kind::Regexp => How::Tokens(toks),
    }
}

/// A character class starting after its `[` at `i`; returns the token and
/// where the pattern goes on after the `]`. [`valid`] has checked it closes.
fn class(chars: &[char], mut i: usize) -> (Tok, usize) {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < chars.len() {
        if chars[i] == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let (lo, next) = class_char(chars, i);
        i = next;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            let (hi, next) = class_char(chars, i + 1);
            i = next;
            ranges.push((lo, hi));
        } else {
            ranges.push((lo, lo));
        }
    }
    (Tok::Class { negated, ranges }, i)
}

fn class_char(chars: &[char], i: usize) -> (char, usize) {
    match chars[i] {
        '\\' if i + 1 < chars.len() => (chars[i + 1], i + 2),
        c => (c, i + 1),
    }
}

/// Go's `filepath.Match` syntax check: classes close and are not empty,
/// ranges go up, no trailing `\`.
fn valid(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 == chars.len() {
                    return false;
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut n = 0;
                loop {
                    match chars.get(i) {
                        None => return false,
                        Some(']') if n > 0 => {
                            i += 1;
                            break;
                        }
                        Some(_) => {
                            let Some((lo, next)) = go_class_char(&chars, i) else {
                                return false;
                            };
                            i = next;
                            if chars.get(i) == Some(&'-') {
                                let Some((hi, next)) = go_class_char(&chars, i + 1) else {
                                    return false;
                                };
                                if hi < lo {
                                    return false;
                                }
                                i = next;
                            }
                            n += 1;
                        }
                    }
                }
            }
            _ => i += 1,
        }
    }
    true
}

fn go_class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match chars.get(i)? {
        '-' | ']' => None,
        '\\' => Some((*chars.get(i + 1)?, i + 2)),
        c => Some((*c, i + 1)),
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> Ignore {
        Ignore::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (patterns, path, excluded), from the Dockerfile reference's
    /// `.dockerignore` section and moby's patternmatcher tests.
    #[test]
    fn matches_like_docker() {
        let table: &[(&str, &str, bool)] = &[
            // The reference's examples.
            ("*/temp*", "somedir/temporary.txt", true),
            ("*/temp*", "somedir/temp", true),
            ("*/temp*", "temp", false),
            ("*/temp*", "a/b/temporary.txt", false),
            ("*/*/temp*", "somedir/subdir/temporary.txt", true),
            ("*/*/temp*", "somedir/temporary.txt", false),
            ("temp?", "tempa", true),
            ("temp?", "temp", false),
            ("temp?", "tempab", false),
            ("temp?", "dir/tempa", false),
            ("**/*.go", "a.go", true),
            ("**/*.go", "x/y/z.go", true),
            ("**/*.go", "x/y/z.gox", false),
            (
                "*.md\n!README*.md\nREADME-secret.md",
                "README-secret.md",
                true,
            ),
            ("*.md\n!README*.md\nREADME-secret.md", "README.md", false),
            ("*.md\n!README*.md\nREADME-secret.md", "notes.md", true),
            (
                "*.md\nREADME-secret.md\n!README*.md",
                "README-secret.md",
                false,
            ),
            // Anchored at the root, leading slash ignored, cleaned.
            ("foo", "foo", true),
            ("foo", "x/foo", false),
            ("/foo/bar", "foo/bar", true),
            ("foo/../bar", "bar", true),
            ("./foo", "foo", true),
            ("foo/", "foo", true),
            // A directory excludes what is under it.
            ("dir", "dir/a/b", true),
            ("dir/", "dir/a", true),
            ("*", "a/b/c", true),
            ("**", "a/b", true),
            ("a/**", "a/b/c", true),
            ("a/**", "a", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/xb", false),
            ("**/b", "b", true),
            ("**/b", "x/b", true),
            ("**/b", "xb", false),
            ("**b", "xb", true),
            ("**/b/*.txt", "x/b/c.txt", true),
            ("a*/**/*.o", "ab/c/d.o", true),
            ("a*/**", "ab/c", true),
            // Exceptions re-include, last match wins.
            ("dir\n!dir/keep", "dir/keep", false),
            ("dir\n!dir/keep", "dir/keep/inner", false),
            ("dir\n!dir/keep", "dir/other", true),
            ("!x\nx", "x", true),
            ("x\n!x", "x", false),
            ("*.txt\n!important.txt\n*.txt", "important.txt", true),
            // Wildcards and classes.
            ("[a-c].txt", "b.txt", true),
            ("[a-c].txt", "d.txt", false),
            ("[^a].txt", "b.txt", true),
            ("[^a].txt", "a.txt", false),
            ("a?c", "a/c", false),
            ("a*c", "ab/c", false),
            ("*.(x)", "a.(x)", true),
            ("a+b", "a+b", true),
            ("a+b", "aab", false),
            // Comments only in the first column; blanks trimmed.
            ("#foo", "#foo", false),
            (" #foo", "#foo", true),
            ("  foo  ", "foo", true),
            ("\u{feff}foo", "foo", true),
            ("foo\r\n", "foo", true),
        ];
        for (patterns, path, want) in table {
            assert_eq!(
                ig(patterns).excludes(path),
                *want,
                "patterns {patterns:?} on {path:?}"
            );
        }
    }

    #[test]
    fn the_escape_character_takes_the_next_literally() {
        assert!(ig("a\\*b").excludes("a*b"));
        assert!(!ig("a\\*b").excludes("axb"));
        assert!(!ig("a\\*b").excludes("a\\*b"));
        assert!(ig("a\\*b?").excludes("a*bc"));
    }

    #[test]
    fn must_enter_only_for_exceptions_written_under_the_directory() {
        let i = ig("dir\n!dir/keep\n!**/deep");
        assert!(i.must_enter("dir"));
        assert!(!i.must_enter("other"));
        assert!(!i.must_enter("di"));
        let i = ig("dir\n!**/keep");
        assert!(!i.must_enter("dir"));
        assert!(ig("a\n!a/b/c").must_enter("a/b"));
    }

    #[test]
    fn bad_patterns_are_errors_with_their_line() {
        assert_eq!(
            Ignore::parse("a\n!\n").unwrap_err().to_string(),
            ".dockerignore line 2: illegal exclusion pattern: \"!\""
        );
        for bad in ["[", "a[b", "[]", "a\\", "[z-a]", "[a-]"] {
            assert!(
                matches!(Ignore::parse(bad), Err(IgnoreError::BadPattern { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    /// A megabyte-long pattern would cost its length times every path's
    /// length in memory for each path matched; no real pattern is longer
    /// than a path can be.
    #[test]
    fn patterns_longer_than_a_path_can_be_are_refused() {
        let long = "*a".repeat(MAX_PATTERN);
        assert_eq!(
            Ignore::parse(&format!("ok\n{long}\n")).unwrap_err(),
            IgnoreError::TooLong {
                line: 2,
                limit: MAX_PATTERN
            }
        );
        assert!(Ignore::parse(&"a".repeat(MAX_PATTERN)).is_ok());
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let pattern = "*a".repeat(40);
        let path = "a".repeat(200) + "b";
        let started = std::time::Instant::now();
        assert!(!ig(&pattern).excludes(&path));
        // Generous: exponential backtracking would take hours.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("./", "."),
            ("/", "/"),
            ("a//b/", "a/b"),
        ] {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }
}
