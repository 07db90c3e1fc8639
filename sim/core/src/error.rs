//! One error type for the whole crate: a message, plus the process exit code it maps to.

use std::fmt;

/// Exit code 2 = bad input or usage (the user can fix it); 1 = anything else.
#[derive(Debug)]
pub struct Error {
    msg: String,
    pub code: i32,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Bad input: a file, flag or value the user gave.
    pub fn msg(msg: impl Into<String>) -> Self {
        Error {
            msg: msg.into(),
            code: 2,
        }
    }
    /// Something failed that the user did not cause directly (I/O while writing, ...).
    pub fn internal(msg: impl Into<String>) -> Self {
        Error {
            msg: msg.into(),
            code: 1,
        }
    }
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Error {
            msg: format!("{ctx}: {}", self.msg),
            code: self.code,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::internal(e.to_string())
    }
}
