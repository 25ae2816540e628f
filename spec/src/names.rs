//! Names made from what people already have: a directory's or a
//! repository's name becomes a project name (see [`name_from`]).

use crate::MAX_NAME_LEN;

/// `base` made into a valid resource name (lower case, `-` for anything
/// else, no leading `-` or `_`, at most [`MAX_NAME_LEN`] characters); empty
/// when nothing usable is left. Both the command line (`moor apply DIR`
/// without `--project`) and the agent's sources (a source without `name`)
/// name their project with it.
pub fn name_from(base: &str) -> String {
    let name: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_start_matches(['-', '_'])
        .chars()
        .take(MAX_NAME_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_directories_and_repositories() {
        for (base, name) in [
            ("site", "site"),
            ("My Site", "my-site"),
            ("ops.fleet", "ops-fleet"),
            ("_hidden", "hidden"),
            ("--x", "x"),
            ("ÿ", ""),
            ("a/b", "a-b"),
            ("", ""),
            ("-_", ""),
        ] {
            assert_eq!(name_from(base), name, "{base:?}");
        }
        assert_eq!(name_from(&"a".repeat(100)).len(), MAX_NAME_LEN);
        for base in ["site", "My Site", "ops.fleet", &"b".repeat(90)] {
            assert!(crate::check_name(&name_from(base)).is_ok(), "{base:?}");
        }
    }
}
