//! BIRD's control socket, spoken directly (what `birdc` does).
//!
//! [`BirdControl::connect`] opens the socket and reads BIRD's greeting
//! (`0001 BIRD x.y ready.`); each command is one line, answered by reply
//! lines up to the first line whose code is followed by a space (see
//! [`super::reply`]). A socket that does not exist or refuses connections
//! means BIRD is not running: [`BirdError::NotRunning`], which callers
//! treat as "later", not as a failure.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

pub use super::reply::BgpSession;
use super::reply::{
    is_configure_success, is_error_code, parse_bgp_sessions, parse_line, LineKind, ReplyLine,
};

/// How long BIRD may take to answer one command (a reconfiguration of a
/// large file included).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The most reply lines one command may produce (a mesh of thousands of
/// peers lists a few dozen lines each).
const MAX_REPLY_LINES: usize = 2_000_000;

/// What went wrong talking to BIRD.
#[derive(Debug, Error)]
pub enum BirdError {
    /// No socket, or nobody listening on it: BIRD is not running (yet).
    #[error("BIRD is not running (nothing listens on {})", path.display())]
    NotRunning {
        /// The control socket path.
        path: PathBuf,
    },
    /// Any other I/O failure on the socket.
    #[error("BIRD control socket {}: {source}", path.display())]
    Io {
        /// The control socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// BIRD did not finish its reply in time.
    #[error("BIRD did not answer `{command}` within {} s", REPLY_TIMEOUT.as_secs())]
    Timeout {
        /// The command sent.
        command: String,
    },
    /// The socket closed mid-reply or sent something that is not BIRD's
    /// protocol.
    #[error("unexpected reply from BIRD to `{command}`: {detail}")]
    Protocol {
        /// The command sent.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// BIRD answered the command with an error code.
    #[error("BIRD refused `{command}`: {code:04} {message}")]
    Refused {
        /// The command sent.
        command: String,
        /// BIRD's reply code.
        code: u16,
        /// BIRD's message.
        message: String,
    },
}

impl BirdError {
    /// True when BIRD is simply not running.
    pub fn is_not_running(&self) -> bool {
        matches!(self, BirdError::NotRunning { .. })
    }
}

/// What a `configure` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigureOutcome {
    /// BIRD took the new configuration (or queued it): its last line.
    Applied {
        /// BIRD's message, e.g. `Reconfigured`.
        message: String,
    },
    /// BIRD refused it and keeps running the old one.
    Rejected {
        /// BIRD's message, e.g. `/etc/bird/bird.conf:3:1 syntax error ...`.
        message: String,
    },
}

/// A connection to BIRD's control socket.
pub struct BirdControl {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl BirdControl {
    /// Connects and reads the greeting.
    pub async fn connect(path: &Path) -> Result<BirdControl, BirdError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    BirdError::NotRunning {
                        path: path.to_path_buf(),
                    }
                }
                _ => BirdError::Io {
                    path: path.to_path_buf(),
                    source: e,
                },
            })?;
        let (read, writer) = stream.into_split();
        let mut control = BirdControl {
            path: path.to_path_buf(),
            reader: BufReader::new(read),
            writer,
        };
        control.read_reply("(greeting)").await?;
        Ok(control)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `command` and returns the reply's lines (error codes included).
    pub async fn command(&mut self, command: &str) -> Result<Vec<ReplyLine>, BirdError> {
        if command.contains(['\n', '\r']) {
            return Err(BirdError::Protocol {
                command: command.escape_debug().to_string(),
                detail: "a command is one line".to_string(),
            });
        }
        let line = format!("{command}\n");
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| self.io_error(e))?;
        self.read_reply(command).await
    }

    /// `configure`: BIRD re-reads its configuration file.
    pub async fn configure(&mut self) -> Result<ConfigureOutcome, BirdError> {
        let lines = self.command("configure").await?;
        let last = lines.last().ok_or_else(|| BirdError::Protocol {
            command: "configure".to_string(),
            detail: "empty reply".to_string(),
        })?;
        let message = error_message(&lines).unwrap_or_else(|| last.text.clone());
        if is_configure_success(last.code) {
            Ok(ConfigureOutcome::Applied { message })
        } else {
            Ok(ConfigureOutcome::Rejected { message })
        }
    }

    /// The BGP protocols of `show protocols all`.
    pub async fn bgp_sessions(&mut self) -> Result<Vec<BgpSession>, BirdError> {
        const COMMAND: &str = "show protocols all";
        let lines = self.command(COMMAND).await?;
        if let Some(message) = error_message(&lines) {
            let code = lines.last().map_or(0, |l| l.code);
            return Err(BirdError::Refused {
                command: COMMAND.to_string(),
                code,
                message,
            });
        }
        Ok(parse_bgp_sessions(&lines))
    }

    fn io_error(&self, source: io::Error) -> BirdError {
        BirdError::Io {
            path: self.path.clone(),
            source,
        }
    }

    async fn read_reply(&mut self, command: &str) -> Result<Vec<ReplyLine>, BirdError> {
        match tokio::time::timeout(REPLY_TIMEOUT, self.read_lines(command)).await {
            Ok(result) => result,
            Err(_) => Err(BirdError::Timeout {
                command: command.to_string(),
            }),
        }
    }

    /// Reads lines up to and including the last line of one reply.
    async fn read_lines(&mut self, command: &str) -> Result<Vec<ReplyLine>, BirdError> {
        let protocol = |detail: String| BirdError::Protocol {
            command: command.to_string(),
            detail,
        };
        let mut lines = Vec::new();
        let mut code = None;
        let mut buf = String::new();
        loop {
            buf.clear();
            let n = self
                .reader
                .read_line(&mut buf)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(protocol("the socket closed mid-reply".to_string()));
            }
            let raw = buf.trim_end_matches('\n');
            let (line, last) = match parse_line(raw) {
                Some(LineKind::More(c, text)) => (line_of(c, text, true), false),
                Some(LineKind::Last(c, text)) => (line_of(c, text, true), true),
                Some(LineKind::Continuation(text)) => {
                    let c = code.ok_or_else(|| protocol("continuation first".to_string()))?;
                    (line_of(c, text, false), false)
                }
                None => return Err(protocol(format!("bad line {:?}", raw.escape_debug()))),
            };
            code = Some(line.code);
            lines.push(line);
            if last {
                return Ok(lines);
            }
            if lines.len() > MAX_REPLY_LINES {
                return Err(protocol("reply too long".to_string()));
            }
        }
    }
}

fn line_of(code: u16, text: String, starts_code: bool) -> ReplyLine {
    ReplyLine {
        code,
        text,
        starts_code,
    }
}

/// The text of the error lines of a reply, if it has any.
fn error_message(lines: &[ReplyLine]) -> Option<String> {
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| is_error_code(l.code))
        .map(|l| l.text.trim())
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}
