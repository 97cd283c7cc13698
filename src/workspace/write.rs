//! Writing: atomic replace (temp file + rename) or append, parents created inside the root.

use std::io::Write;

use super::*;

impl Workspace {
    /// Writes `data`: atomically (temp file + rename) by default, or appended in place.
    /// Missing parent folders are created inside the workspace.
    pub fn write(
        &self,
        path: &WorkspacePath,
        data: &[u8],
        append: bool,
    ) -> Result<u64, WorkspaceError> {
        self.write_limited(path, data, append, MAX_WRITE_BYTES)
    }

    /// The size and modification time of a regular file, or `None` when there is no file.
    pub fn stamp(
        &self,
        path: &WorkspacePath,
    ) -> Result<Option<(u64, std::time::SystemTime)>, WorkspaceError> {
        match self.dir.metadata(&path.rel) {
            Ok(m) if m.is_file() => Ok(Some((
                m.len(),
                m.modified().map_err(io_err(path))?.into_std(),
            ))),
            Ok(m) if m.is_dir() => Err(WorkspaceError::IsDirectory {
                path: path.display(),
            }),
            Ok(_) => Err(WorkspaceError::NotRegular {
                path: path.display(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_io(path, e)),
        }
    }

    /// [`Workspace::write`] with another size limit (notebooks written by the server).
    pub fn write_limited(
        &self,
        path: &WorkspacePath,
        data: &[u8],
        append: bool,
        limit: usize,
    ) -> Result<u64, WorkspaceError> {
        if path.is_root() {
            return Err(WorkspaceError::IsDirectory {
                path: path.display(),
            });
        }
        if data.len() > limit {
            return Err(WorkspaceError::TooLarge {
                what: format!(
                    "content is {} bytes; the limit per write is {limit} bytes (write large data from Python, or append in parts)",
                    data.len()
                ),
            });
        }
        let parent = path.rel.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            match self.dir.metadata(parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(WorkspaceError::BadPath(format!(
                        "{}: {} is a file, not a folder",
                        path.display(),
                        parent.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.dir.create_dir_all(parent).map_err(io_err(path))?;
                }
                Err(e) => return Err(map_io(path, e)),
            }
        }
        let name = path
            .rel
            .file_name()
            .ok_or_else(|| WorkspaceError::BadPath(format!("{}: no file name", path.display())))?;
        let existing = match self.dir.metadata(&path.rel) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(map_io(path, e)),
        };
        if let Some(m) = &existing {
            if m.is_dir() {
                return Err(WorkspaceError::IsDirectory {
                    path: path.display(),
                });
            }
            if !m.is_file() {
                return Err(WorkspaceError::NotRegular {
                    path: path.display(),
                });
            }
        }
        if append {
            if let Some(m) = &existing {
                if hard_links(m) > 1 {
                    return Err(WorkspaceError::Denied {
                        path: path.display(),
                        reason: "the file has other hard links; appending in place would change them too. Write the whole file instead (append=false)".into(),
                    });
                }
            }
            let mut o = OpenOptions::new();
            o.append(true).create(true);
            no_block(&mut o);
            let f = self.dir.open_with(&path.rel, &o).map_err(io_err(path))?;
            let meta = f.metadata().map_err(io_err(path))?;
            if !meta.is_file() {
                return Err(WorkspaceError::NotRegular {
                    path: path.display(),
                });
            }
            let mut f = f.into_std();
            f.write_all(data).map_err(io_err(path))?;
            return Ok(meta.len() + data.len() as u64);
        }
        // Atomic replace: write a sibling temp file, then rename over the target. A failed
        // write leaves the old file as it was; a hard link elsewhere keeps the old content.
        let dir = match parent {
            Some(p) => self.dir.open_dir(p).map_err(io_err(path))?,
            None => self.dir.try_clone().map_err(io_err(path))?,
        };
        let tmp_name = format!(
            ".{}.kernel-mcp-{}.tmp",
            name.to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        );
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        cap_std::fs::OpenOptionsExt::mode(&mut o, 0o644);
        let result = (|| -> std::io::Result<()> {
            let mut f = dir.open_with(&tmp_name, &o)?;
            f.write_all(data)?;
            f.sync_data()?;
            dir.rename(&tmp_name, &dir, name)
        })();
        if let Err(e) = result {
            let _ = dir.remove_file(&tmp_name);
            return Err(map_io(path, e));
        }
        Ok(data.len() as u64)
    }
}
