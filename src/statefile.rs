//! Files in `state_directory`, written atomically: a temporary file beside the target, fsync,
//! rename over it, fsync of the directory. A reader (or a crash) sees the old file or the new
//! one, never a part. Used by the drains (`drain::store`), the MTA-STS policy cache and the
//! TLS-RPT reports (`tlspolicy`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replace `dir/name` with `bytes` atomically (mode 0640).
pub fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), (std::path::PathBuf, io::Error)> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)
        .map_err(at(&tmp))?;
    f.write_all(bytes).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(at(&path))?;
    // The rename itself is durable once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))?;
    Ok(())
}
