//! Putting a rendered configuration in place and making BIRD run it.
//!
//! [`BirdConfigApplier::apply`] does nothing when the file already holds
//! the text. Otherwise it writes the text to a temporary file next to the
//! target (same owner and mode as the target, fsynced), has BIRD parse it
//! (`bird -p -c TMP`: a refused text leaves the old file untouched), renames
//! it over the target, and sends `configure` on the control socket. If
//! BIRD refuses the reload, the previous content is put back, so the file
//! always matches what BIRD runs. BIRD not running is not an error: the
//! file is in place (BIRD reads it when it starts) and
//! [`BirdConfigApplier::retry_pending`] reloads once the socket answers.
//!
//! `configure` makes BIRD re-read the file it was started with: start BIRD
//! with `-c` on the same path (the Debian unit's `/etc/bird/bird.conf`).

use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::control::{BirdControl, BirdError, ConfigureOutcome};

/// How long `bird -p` may take.
const PARSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Mode of a configuration file margay creates (none was there).
const NEW_FILE_MODE: u32 = 0o644;

/// Where a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectStage {
    /// `bird -p` refused it; the file was not touched.
    Parse,
    /// BIRD refused to reload it; the previous file was put back.
    Reload,
}

impl RejectStage {
    /// `parse` or `reload` (for logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectStage::Parse => "parse",
            RejectStage::Reload => "reload",
        }
    }
}

/// What one [`BirdConfigApplier::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Nothing to do: the file holds this text and BIRD runs it (or this
    /// exact text was refused last time: see
    /// [`BirdConfigApplier::last_rejection`]).
    Unchanged,
    /// Written (if it changed) and BIRD reloaded it.
    Reloaded,
    /// Written, but BIRD is not running: call
    /// [`BirdConfigApplier::retry_pending`] later.
    WrittenPendingReload,
    /// Refused; the old file (and BIRD's running configuration) stay.
    Rejected {
        /// Which check refused it.
        stage: RejectStage,
        /// BIRD's message.
        message: String,
    },
}

/// Why applying failed (distinct from BIRD refusing the text).
#[derive(Debug, Error)]
pub enum ApplyError {
    /// Reading or writing the configuration file.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `bird -p` could not be run.
    #[error("cannot run {} -p: {detail}", binary.display())]
    ParseCheck {
        /// The binary.
        binary: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The control socket failed (other than BIRD not running); the file
    /// is written and the reload is pending.
    #[error(transparent)]
    Bird(#[from] BirdError),
}

/// A written file BIRD has not reloaded yet.
#[derive(Debug, Clone)]
struct PendingReload {
    /// What was written.
    text: String,
    /// What the file held before (put back if BIRD refuses the reload).
    previous: Option<String>,
}

/// Writes BIRD's configuration file and reloads BIRD.
#[derive(Debug)]
pub struct BirdConfigApplier {
    path: PathBuf,
    socket: PathBuf,
    bird_binary: PathBuf,
    pending: Option<PendingReload>,
    last_rejected: Option<(String, RejectStage, String)>,
}

impl BirdConfigApplier {
    /// An applier for the file `path`, BIRD's control socket `socket`, and
    /// the `bird` binary used for parse checks.
    pub fn new(path: PathBuf, socket: PathBuf, bird_binary: PathBuf) -> Self {
        BirdConfigApplier {
            path,
            socket,
            bird_binary,
            pending: None,
            last_rejected: None,
        }
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when a written file still waits for BIRD to reload it.
    pub fn reload_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The last refusal: stage and BIRD's message.
    pub fn last_rejection(&self) -> Option<(RejectStage, &str)> {
        self.last_rejected
            .as_ref()
            .map(|(_, stage, message)| (*stage, message.as_str()))
    }

    /// Makes `text` BIRD's configuration (see the module documentation).
    pub async fn apply(&mut self, text: &str) -> Result<ApplyOutcome, ApplyError> {
        let previous = self.read_current()?;
        if previous.as_deref() == Some(text) {
            return self.retry_pending().await;
        }
        if self
            .last_rejected
            .as_ref()
            .is_some_and(|(rejected, _, _)| rejected == text)
        {
            return Ok(ApplyOutcome::Unchanged);
        }
        let temp = self.write_temp(text)?;
        if let Err(message) = self.parse_check(&temp).await {
            let _ = std::fs::remove_file(&temp);
            return Ok(self.rejected(text, RejectStage::Parse, message?));
        }
        self.install(&temp)?;
        // A reload still pending for an older text is superseded; what to
        // restore is what BIRD last ran, the oldest previous.
        let restore_to = match self.pending.take() {
            Some(older) => older.previous,
            None => previous,
        };
        self.pending = Some(PendingReload {
            text: text.to_string(),
            previous: restore_to,
        });
        self.last_rejected = None;
        self.retry_pending().await
    }

    /// Reloads BIRD if a written file waits for it; `Unchanged` otherwise.
    /// When BIRD refuses the reload, the previous file is put back.
    pub async fn retry_pending(&mut self) -> Result<ApplyOutcome, ApplyError> {
        let Some(pending) = self.pending.as_ref() else {
            return Ok(ApplyOutcome::Unchanged);
        };
        let mut control = match BirdControl::connect(&self.socket).await {
            Ok(control) => control,
            Err(e) if e.is_not_running() => return Ok(ApplyOutcome::WrittenPendingReload),
            Err(e) => return Err(e.into()),
        };
        match control.configure().await? {
            ConfigureOutcome::Applied { .. } => {
                self.pending = None;
                Ok(ApplyOutcome::Reloaded)
            }
            ConfigureOutcome::Rejected { message } => {
                let PendingReload { text, previous } = pending.clone();
                self.restore(previous.as_deref())?;
                self.pending = None;
                Ok(self.rejected(&text, RejectStage::Reload, message))
            }
        }
    }

    fn rejected(&mut self, text: &str, stage: RejectStage, message: String) -> ApplyOutcome {
        self.last_rejected = Some((text.to_string(), stage, message.clone()));
        ApplyOutcome::Rejected { stage, message }
    }

    fn file_error(&self, path: &Path, source: io::Error) -> ApplyError {
        ApplyError::File {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The file's content; `None` when there is no file.
    fn read_current(&self) -> Result<Option<String>, ApplyError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.file_error(&self.path, e)),
        }
    }

    /// `.<name>.margay-tmp` in the target's directory.
    fn temp_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bird.conf".to_string());
        self.path.with_file_name(format!(".{name}.margay-tmp"))
    }

    /// Writes `text` to the temp file with the target's mode, fsynced.
    fn write_temp(&self, text: &str) -> Result<PathBuf, ApplyError> {
        let temp = self.temp_path();
        let target = std::fs::metadata(&self.path).ok();
        let mode = target
            .as_ref()
            .map_or(NEW_FILE_MODE, |meta| meta.permissions().mode() & 0o7777);
        let write = || -> io::Result<()> {
            let mut file = std::fs::File::create(&temp)?;
            if let Some(meta) = &target {
                keep_owner_and_group(&file, meta)?;
            }
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            self.file_error(&temp, e)
        })?;
        Ok(temp)
    }

    /// Renames the temp file over the target and syncs the directory.
    fn install(&self, temp: &Path) -> Result<(), ApplyError> {
        std::fs::rename(temp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(temp);
            self.file_error(&self.path, e)
        })?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.file_error(dir, e))?;
        }
        Ok(())
    }

    /// Puts the previous content back (removes the file if there was none).
    fn restore(&self, previous: Option<&str>) -> Result<(), ApplyError> {
        match previous {
            Some(text) => {
                let temp = self.write_temp(text)?;
                self.install(&temp)
            }
            None => std::fs::remove_file(&self.path).map_err(|e| self.file_error(&self.path, e)),
        }
    }

    /// `bird -p -c temp`: `Ok(())` when BIRD accepts it, `Err(Ok(msg))`
    /// when it refuses, `Err(Err(_))` when the check cannot run.
    async fn parse_check(&self, temp: &Path) -> Result<(), Result<String, ApplyError>> {
        let run = tokio::process::Command::new(&self.bird_binary)
            .arg("-p")
            .arg("-c")
            .arg(temp)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let failed = |detail: String| {
            Err(Err(ApplyError::ParseCheck {
                binary: self.bird_binary.clone(),
                detail,
            }))
        };
        match tokio::time::timeout(PARSE_TIMEOUT, run).await {
            Err(_) => failed(format!("no answer within {} s", PARSE_TIMEOUT.as_secs())),
            Ok(Err(e)) => failed(e.to_string()),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let message = stderr
                    .trim()
                    .replace(&*temp.to_string_lossy(), "<new config>");
                Err(Ok(if message.is_empty() {
                    format!("bird -p exited with {}", out.status)
                } else {
                    message
                }))
            }
        }
    }
}

/// Gives `file` the owner and group of the file it replaces: BIRD may run as
/// its own user (Debian: `bird:bird`, 0640) and must still read the new
/// file. Only root may give a file away; an unprivileged margay (a member
/// of BIRD's group) keeps the group, which is what BIRD needs to read it.
fn keep_owner_and_group(file: &std::fs::File, target: &std::fs::Metadata) -> io::Result<()> {
    match std::os::unix::fs::fchown(file, Some(target.uid()), Some(target.gid())) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            std::os::unix::fs::fchown(file, None, Some(target.gid()))
        }
        other => other,
    }
}
