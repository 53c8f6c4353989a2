//! A config file refused at start or reload: the file, the line, the column and what was
//! expected. A leaf: every part's config reads errors through it.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A config file refused at start (or at reload): where and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters).
    pub column: Option<usize>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}: {}", self.file.display(), self.message),
            _ => format!("{}: {}", self.file.display(), self.message),
        }
    }

    /// A TOML error of `text` (read from `file`) at its place, its message prefixed with
    /// `section` (e.g. "[realtime]"): for the product crates that read their own sections.
    pub fn from_toml(file: &Path, text: &str, section: &str, e: &toml::de::Error) -> Self {
        Self::at(
            file,
            text,
            e.span(),
            format!("{section}: {}", in_file_terms(text, e)),
        )
    }

    /// An error at `span` of `text` (the file's contents): its line and column are
    /// worked out from the span.
    pub fn at(
        file: &Path,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// A TOML/serde message said in the file's terms: the key it is about, and what a value
/// there looks like (`threads: expected a whole number, found "two"`), instead of Rust's
/// (`invalid type: string "two", expected usize`).
pub(crate) fn in_file_terms(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end();
    let Some(rest) = msg.strip_prefix("invalid type: ") else {
        return msg.to_string();
    };
    let Some((found, expected)) = rest.split_once(", expected ") else {
        return msg.to_string();
    };
    // the key: what stands before `=` on the value's line
    let key = e
        .span()
        .and_then(|sp| {
            let line_start = text[..sp.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let line = &text[line_start..sp.start.min(text.len())];
            line.split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string())
        })
        .filter(|k| !k.is_empty());
    let found = found
        .strip_prefix("string ")
        .or_else(|| found.strip_prefix("integer "))
        .or_else(|| found.strip_prefix("boolean "))
        .or_else(|| found.strip_prefix("float "))
        .unwrap_or(found);
    let wanted = match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" | "i64" | "i32" => "a whole number".to_string(),
        "f64" | "f32" => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a string" => "text in quotes".to_string(),
        "a sequence" if key.as_deref().is_some_and(|k| k == "listen") => {
            "a list of addresses, e.g. [\"127.0.0.1:8080\"]".to_string()
        }
        "a sequence" => "a list in brackets, e.g. [\"a\", \"b\"]".to_string(),
        other => other.to_string(),
    };
    match key {
        Some(k) => format!("{k}: expected {wanted}, found {found}"),
        None => format!("expected {wanted}, found {found}"),
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}
