//! Atomic outputs: every file is written to a temporary file in the
//! destination's folder and renamed into place only when complete, and a
//! run folder is written whole into a temporary folder beside its target
//! and renamed into place last ([`RunFolder`]). Temporary paths are
//! registered so that SIGINT and SIGTERM remove them before the process
//! ends ([`install_signal_cleanup`]): a failed or killed run leaves nothing
//! half-written and nothing behind.

use anyhow::{bail, Context, Result};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary paths to remove if the process is interrupted.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn register(path: &Path) {
    if let Ok(mut p) = PENDING.lock() {
        p.push(path.to_path_buf());
    }
}

fn unregister(path: &Path) {
    if let Ok(mut p) = PENDING.lock() {
        p.retain(|q| q != path);
    }
}

/// On SIGINT or SIGTERM, removes every temporary output still pending and
/// exits with 130 (the shell's code for an interrupt).
pub fn install_signal_cleanup() {
    let _ = ctrlc::set_handler(|| {
        if let Ok(paths) = PENDING.lock() {
            for p in paths.iter() {
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                };
            }
        }
        eprintln!("interrupted: temporary outputs removed");
        std::process::exit(130);
    });
}

/// A run folder written as one unit: files go into a temporary folder
/// beside `target`, which takes the target's name only in [`RunFolder::commit`].
/// A target that exists and is not empty is refused unless `force`, which
/// replaces it whole. The temporary folder is created at once, so an
/// unwritable destination is found before any work is done.
pub struct RunFolder {
    target: PathBuf,
    tmp: Option<tempfile::TempDir>,
    /// How errors name the target (`--out DIR`, a sweep's point folder).
    label: String,
}

impl RunFolder {
    pub fn prepare(target: &Path, force: bool) -> Result<RunFolder> {
        Self::prepare_named(target, force, &format!("--out {}", target.display()))
    }

    /// [`RunFolder::prepare`], errors naming the target as `label`.
    pub fn prepare_named(target: &Path, force: bool, label: &str) -> Result<RunFolder> {
        let flag = label.to_string();
        if target.exists() {
            if !target.is_dir() {
                bail!("{flag}: exists and is not a folder");
            }
            let empty = std::fs::read_dir(target)
                .with_context(|| format!("{flag}: cannot read the folder"))?
                .next()
                .is_none();
            if !empty && !force {
                bail!(
                    "{flag}: the folder is not empty (a run folder holds one run; --force replaces it whole)"
                );
            }
        }
        let parent = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{flag}: cannot create {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(&temporary_prefix())
            .tempdir_in(parent)
            .with_context(|| format!("{flag}: cannot write in {}", parent.display()))?;
        register(tmp.path());
        Ok(RunFolder {
            target: target.to_path_buf(),
            tmp: Some(tmp),
            label: flag,
        })
    }

    /// Writes one file of the run.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(tmp) = &self.tmp else {
            bail!(
                "{}: the run folder was already committed",
                self.target.display()
            );
        };
        write_bytes_atomic(&tmp.path().join(name), bytes)
    }

    /// Writes one file of the run into its subfolder `sub`.
    pub fn write_in(&self, sub: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(tmp) = &self.tmp else {
            bail!(
                "{}: the run folder was already committed",
                self.target.display()
            );
        };
        let dir = tmp.path().join(sub);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_bytes_atomic(&dir.join(name), bytes)
    }

    /// Moves the finished run into place (replacing what was there).
    pub fn commit(mut self) -> Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let flag = self.label.clone();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("{flag}: cannot set permissions"))?;
        }
        let done = tmp.keep();
        unregister(&done);
        if self.target.exists() {
            // --force: the old run goes aside, the new one in, then the old one away.
            let old = done.with_extension("replaced");
            std::fs::rename(&self.target, &old)
                .with_context(|| format!("{flag}: cannot move the previous run aside"))?;
            if let Err(e) = std::fs::rename(&done, &self.target) {
                let _ = std::fs::rename(&old, &self.target);
                let _ = std::fs::remove_dir_all(&done);
                return Err(e).with_context(|| format!("{flag}: cannot move the run into place"));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else if let Err(e) = std::fs::rename(&done, &self.target) {
            let _ = std::fs::remove_dir_all(&done);
            return Err(e).with_context(|| format!("{flag}: cannot move the run into place"));
        }
        Ok(())
    }
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            unregister(tmp.path());
        }
    }
}

/// Creates `path` atomically from what `fill` writes.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    Staged::fill(path, fill)?.publish()
}

/// Writes several files as one unit: each is written whole to its
/// temporary file first, and only when all are complete do they take their
/// places, so a failure while writing any of them leaves none.
pub fn write_files_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    let staged = files
        .iter()
        .map(|(path, bytes)| {
            Staged::fill(path, |w| {
                w.write_all(bytes)?;
                Ok(())
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for s in staged {
        s.publish()?;
    }
    Ok(())
}

/// A finished output in its temporary file beside its destination,
/// registered for removal on signals; dropped unpublished, it is removed.
struct Staged {
    path: PathBuf,
    /// Taken by [`Staged::publish`].
    tmp: Option<tempfile::NamedTempFile>,
}

impl Staged {
    fn fill(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<Staged> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".moonlab-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| {
                format!(
                    "{}: cannot create a temporary file in {}",
                    path.display(),
                    dir.display()
                )
            })?;
        register(tmp.path());
        let staged = Staged {
            path: path.to_path_buf(),
            tmp: Some(tmp),
        };
        let file = staged
            .tmp
            .as_ref()
            .map(|t| t.as_file())
            .context("staged twice")?;
        {
            let mut w = BufWriter::new(file);
            fill(&mut w)?;
            w.flush()
                .with_context(|| format!("{}: write failed", path.display()))?;
        }
        // Temporary files are created private (0600); a finished output is
        // an ordinary file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("{}: cannot set permissions", path.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("{}: sync failed", path.display()))?;
        Ok(staged)
    }

    fn publish(mut self) -> Result<()> {
        let tmp = self.tmp.take().context("published twice")?;
        let tmp_path = tmp.path().to_path_buf();
        let result = tmp.persist(&self.path).map_err(|e| e.error);
        unregister(&tmp_path);
        result.with_context(|| {
            format!(
                "{}: cannot move the finished file into place",
                self.path.display()
            )
        })?;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            unregister(tmp.path());
        }
    }
}

/// Writes bytes produced in memory atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| {
        w.write_all(bytes)?;
        Ok(())
    })
}

/// Writes `text` to standard output. A closed pipe (`moonlab ... | head`)
/// ends the output quietly instead of failing.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

/// The prefix of a run folder's temporary twin: `.moonlab-run-<host>-<pid>-`,
/// so that a later run can tell a temporary of a process that died (SIGKILL
/// leaves it behind) from one a live process, here or on another host
/// sharing the folder, is still writing.
fn temporary_prefix() -> String {
    format!(".moonlab-run-{}-{}-", host_name(), std::process::id())
}

fn host_name() -> String {
    // Dashes separate the name's parts: a host's own become underscores.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['-', '/', '.'], "_"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string())
}

/// Removes the temporary run folders in `dir` left by processes of this
/// host that no longer run (killed before they could clean up); returns
/// how many. Temporaries of live processes and of other hosts stay.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let host = host_name();
    let prefix = format!(".moonlab-run-{host}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // /proc/<pid> exists while the process runs (Linux); elsewhere
        // nothing is known, so nothing is removed.
        let proc_root = Path::new("/proc");
        let alive = !proc_root.is_dir() || proc_root.join(pid.to_string()).exists();
        if !alive && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
