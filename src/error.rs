//! Error kinds that decide the process exit code (docs/ARCHITECTURE.md §3: 0 ok, 2 bad input, 1 runtime fault).

use std::fmt;

/// Bad input from the user: a config, model, manifest or argument problem. Exit code 2, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Shorthand to build an `anyhow::Error` tagged as bad input.
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// Exit code for an error chain: 2 when any cause is `BadInput`, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.downcast_ref::<BadInput>().is_some()) {
        2
    } else {
        1
    }
}

/// One line describing the whole chain ("outer: inner: root"), for the CLI.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string().replace('\n', " ");
        if parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
