//! Files the harness writes and reads: atomically replaced outputs, and
//! bounded reads of inputs a user hands it.
//!
//! A leaf module: it knows nothing of reports, captures or scenarios, so any
//! stage may use it without creating a cycle. Every output (report, pcap,
//! JUnit, HTML, baseline) is written to a temporary sibling, flushed and
//! renamed into place, so a crash, a full disk or a signal never leaves half
//! a file under the real name; and a temporary file is removed on every
//! error path. Inputs are read only if they are regular files below a size
//! limit, so a FIFO, a device or a runaway file is a clear error, not a hang.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix and suffix of temporary files, so that leftovers of a killed
/// process can be recognised and removed later ([`remove_stale_temps`]).
const TEMP_PREFIX: &str = ".";
const TEMP_SUFFIX: &str = ".tmp";

/// A sibling temporary path, unique per process and call:
/// `dir/.NAME.PID.N.tmp`.
pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        "{TEMP_PREFIX}{name}.{}.{}{TEMP_SUFFIX}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `path` atomically: `fill` writes the content into a buffered
/// temporary file, which is then flushed, synced and renamed into place.
/// On any error the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        fill(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `path` atomically with a writer that wants a path of its own
/// (libpcap's savefile): `fill` writes the temporary path, which is then
/// synced and renamed into place, or removed on any error.
pub fn write_atomic_path(
    path: &Path,
    fill: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_path_for(path);
    let result = fill(&tmp)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Makes sure outputs can be written into `dir` before any work is done:
/// creates it, writes and removes a probe file, and removes the temporary
/// files a killed process left there ([`remove_stale_temps`]). A run that
/// could not keep its results is refused before it starts, not after.
pub fn prepare_output_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::create_dir_all(dir)?;
    let probe = temp_path_for(&dir.join("probe"));
    File::create(&probe)?;
    std::fs::remove_file(&probe)?;
    remove_stale_temps(dir);
    Ok(())
}

/// Removes temporary files that a process killed mid-write left in `dir`
/// (`.NAME.PID.N.tmp` whose PID is no longer running). Returns how many.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(inner) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
        else {
            continue;
        };
        // NAME.PID.N: the PID is the second-to-last dot-separated field.
        let mut fields = inner.rsplit('.');
        let (Some(n), Some(pid)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (n.parse::<u64>(), pid.parse::<u32>()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Why an input file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a regular file ({kind}); give the path of a file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "{}: {size} bytes is more than the {limit}-byte limit for {what}; is this the right file?",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("{}: not UTF-8 text ({what} files are text)", path.display())]
    NotText { path: PathBuf, what: &'static str },
}

impl InputError {
    pub fn path(&self) -> &Path {
        match self {
            InputError::Io { path, .. }
            | InputError::NotAFile { path, .. }
            | InputError::TooLarge { path, .. }
            | InputError::NotText { path, .. } => path,
        }
    }
}

/// What a file that is not a regular one is.
#[cfg(unix)]
fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(not(unix))]
fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading if it is a regular file (after following
/// symlinks) of at most `limit` bytes. The check is made on the opened
/// descriptor, with `O_NONBLOCK` so that opening a FIFO cannot block.
pub(crate) fn open_input(path: &Path, limit: u64, what: &'static str) -> Result<File, InputError> {
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = kind_of(ft);
        return Err(InputError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > limit {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
            what,
        });
    }
    Ok(file)
}

/// Reads a text input of at most `limit` bytes (see [`open_input`]).
pub(crate) fn read_text(path: &Path, limit: u64, what: &'static str) -> Result<String, InputError> {
    let file = open_input(path, limit, what)?;
    let mut bytes = Vec::new();
    // The size was checked, but a file can grow: never read past the limit.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
            what,
        });
    }
    String::from_utf8(bytes).map_err(|_| InputError::NotText {
        path: path.to_path_buf(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("teardown-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = scratch("atomic");
        let path = dir.join("r.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names(&dir), ["r.json"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Regression: a failed write (here: the filler fails, as a full disk
    /// would) left its zero-byte temporary file behind.
    #[test]
    fn a_failed_write_removes_its_temp_file_and_keeps_the_old_file() {
        let dir = scratch("fail");
        let path = dir.join("c.pcap");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("No space left on device"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("No space"));
        assert_eq!(names(&dir), ["c.pcap"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Regression: a SIGKILL between write and rename left a complete
    /// `.R.json.PID.N.tmp` that nothing ever removed.
    #[test]
    fn temps_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = scratch("stale");
        // PID 2^22 + 1 is above Linux's pid_max limit: never a live process.
        std::fs::write(dir.join(".r.json.4194305.0.tmp"), b"{}").unwrap();
        let mine = temp_path_for(&dir.join("r.json"));
        std::fs::write(&mine, b"{}").unwrap();
        std::fs::write(dir.join("keep.json"), b"{}").unwrap();
        std::fs::write(dir.join(".hidden"), b"").unwrap();
        assert_eq!(remove_stale_temps(&dir), 1);
        let mine = mine.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            names(&dir),
            [".hidden".to_string(), mine, "keep.json".into()]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn inputs_must_be_small_regular_files() {
        let dir = scratch("input");
        let fifo = dir.join("x.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_text(&fifo, 100, "scenario").unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = read_text(Path::new("/dev/zero"), 100, "scenario").unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        let link = dir.join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read_text(&link, 100, "scenario"),
            Err(InputError::NotAFile { .. })
        ));
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'a'; 101]).unwrap();
        let e = read_text(&big, 100, "scenario").unwrap_err();
        assert!(
            e.to_string()
                .contains("101 bytes is more than the 100-byte limit"),
            "{e}"
        );
        let bin = dir.join("bin.toml");
        std::fs::write(&bin, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_text(&bin, 100, "scenario"),
            Err(InputError::NotText { .. })
        ));
        assert!(matches!(
            read_text(&dir, 100, "scenario"),
            Err(InputError::NotAFile { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
