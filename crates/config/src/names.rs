//! What a sweep or run name may be. Names become folder names (`runs/<sweep>/…`,
//! `reports/<sweep>/`), so a sweep name is a short portable file name that can never be `.`,
//! `..` or empty; a run name is free text but bounded, and its folder uses [`path_component`].

use crate::error::ConfigError;

/// Longest sweep name.
pub const MAX_SWEEP_NAME: usize = 64;
/// Longest run name (grid values joined, or `train --name`).
pub const MAX_RUN_NAME: usize = 200;

/// Text from a spec or a store as it can be printed to a terminal: control characters (an
/// escape sequence, a newline) written as escapes, everything else as it is.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// A name as it can be shown in one line: control characters escaped, long ones cut.
pub fn shown(name: &str) -> String {
    let escaped = terminal_safe(name);
    match escaped.char_indices().nth(48) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// A sweep name: 1–64 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit.
pub fn check_sweep_name(name: &str) -> Result<(), ConfigError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if valid_chars && starts_well && name.len() <= MAX_SWEEP_NAME {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "sweep name \"{}\" ({} characters) is not allowed: use 1 to {MAX_SWEEP_NAME} letters, \
         digits, `-`, `_` or `.`, starting with a letter or digit",
        shown(name),
        name.chars().count()
    )))
}

/// A run name: 1–200 characters, no control characters.
pub fn check_run_name(name: &str) -> Result<(), ConfigError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_RUN_NAME || name.chars().any(char::is_control) {
        return Err(ConfigError::Invalid(format!(
            "run name \"{}\" ({chars} characters) is not allowed: use 1 to {MAX_RUN_NAME} \
             characters, none of them control characters",
            shown(name)
        )));
    }
    Ok(())
}

/// `name` as one folder name: letters, digits and `=-_.,` kept, anything else `_`, at most
/// `max` characters, and never empty, `.` or `..` (those get a leading `_`).
pub fn path_component(name: &str, max: usize) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=-_.,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        format!("_{safe}")
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_names_cannot_escape_a_folder() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\nb",
            "a\0b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_sweep_name(bad).is_err(), "{bad:?}");
        }
        for good in ["quickstart", "mnist-schedules", "a.b_c-1", &"x".repeat(64)] {
            check_sweep_name(good).unwrap();
        }
    }

    #[test]
    fn path_components_are_never_special() {
        assert_eq!(path_component("..", 80), "_..");
        assert_eq!(path_component(".", 80), "_.");
        assert_eq!(path_component("", 80), "_");
        assert_eq!(path_component("a/../b", 80), "a_.._b");
        assert_eq!(
            path_component("T=100,schedule=cosine", 80),
            "T=100,schedule=cosine"
        );
        assert_eq!(path_component(&"y".repeat(100), 80).len(), 80);
    }

    #[test]
    fn run_names_are_bounded_and_printable() {
        assert!(check_run_name("").is_err());
        assert!(check_run_name("a\u{1b}]2;x").is_err());
        assert!(check_run_name(&"r".repeat(201)).is_err());
        check_run_name("schedule=cosine,T=100").unwrap();
        assert_eq!(terminal_safe("a\u{1b}]2;x\u{7}é"), "a\\u{1b}]2;x\\u{7}é");
        let e = check_run_name("\u{1b}[2J").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
    }
}
