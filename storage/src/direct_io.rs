//! Whether a data directory takes direct I/O, which the store then uses for
//! the SST files that flushes and compactions write.
//!
//! Those files are written once, in big sequential chunks, and read back
//! through RocksDB's block cache, not the page cache. Written through the
//! page cache, every 4 KiB of them also costs the kernel a fresh page and a
//! copy into it: under 64 writers of 100-event appends that copy
//! (`copy_folio_from_iter_atomic`, on the flush thread) was 15% of the
//! nodes' CPU on a 2-vCPU VM, where a fresh page costs several µs
//! (bench/README.md, session 22). The WAL, written in small appends and
//! synced, keeps using the page cache.
//!
//! Not every filesystem takes `O_DIRECT` (some FUSE and network
//! filesystems refuse it). RocksDB would then fail its first flush and stop
//! taking writes, so the store asks the directory first. Off Linux the
//! answer is no.

use std::fs;
#[cfg(target_os = "linux")]
use std::fs::OpenOptions;
use std::path::Path;

/// Alignment (and size) of the probe's write: the largest logical block size
/// of common devices, a multiple of the smaller ones.
#[cfg(target_os = "linux")]
const BLOCK: usize = 4096;

/// Name of the probe file, removed again before this returns.
const PROBE: &str = ".direct-io-probe";

/// Whether files in `dir` can be opened with `O_DIRECT` and take an aligned
/// write. Leaves nothing behind; any failure (including `dir` missing or not
/// writable) answers `false`.
pub(crate) fn supported(dir: &Path) -> bool {
    let path = dir.join(PROBE);
    let answer = aligned_write(&path).is_ok();
    let _ = fs::remove_file(&path);
    answer
}

#[cfg(target_os = "linux")]
fn aligned_write(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    // Direct I/O wants the buffer's address aligned too: take the aligned
    // block out of a buffer twice its size.
    let buffer = vec![0u8; 2 * BLOCK];
    let start = buffer.as_ptr().align_offset(BLOCK);
    file.write_all(&buffer[start..start + BLOCK])
}

/// `O_DIRECT` is Linux's; elsewhere the store keeps the page cache.
#[cfg(not(target_os = "linux"))]
fn aligned_write(_path: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_local_directory_takes_it_and_keeps_no_probe() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // ext4, xfs and (since Linux 6.6) tmpfs all take O_DIRECT: whatever
        // backs the test's temp dir here does.
        assert!(supported(dir.path()));
        assert_eq!(fs::read_dir(dir.path())?.count(), 0, "the probe file stays");
        Ok(())
    }

    #[test]
    fn a_directory_that_cannot_hold_files_does_not() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("a-file");
        fs::write(&file, b"x")?;
        assert!(!supported(&file), "a regular file is no directory");
        assert!(!supported(&dir.path().join("missing")));
        Ok(())
    }
}
