//! Resumable JSON Lines result files: one JSON object per line, appended and synced to disk as
//! each is written, so an interrupted run (Ctrl-C, a kill, a power cut) keeps every complete
//! line and a rerun continues after it. A last line cut short by the interruption is dropped;
//! any other malformed line is an error naming its number, never silently skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The complete records of a JSON Lines text, and the byte length they fill (everything after it
/// is a torn last line). A record that parses but lacks its final newline is kept.
fn parse_records<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<(Vec<T>, usize, bool)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < bytes.len() {
        line_no += 1;
        let (end, next, has_newline) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (start + i, start + i + 1, true),
            None => (bytes.len(), bytes.len(), false),
        };
        let line = &bytes[start..end];
        let last = next >= bytes.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            start = next;
            continue;
        }
        match serde_json::from_slice::<T>(line) {
            Ok(record) => out.push(record),
            // An interrupted write: the record is produced again by the rerun.
            Err(_) if last => return Ok((out, start, false)),
            Err(e) => {
                return Err(Error::InvalidInput {
                    what: format!("{}, line {line_no}", path.display()),
                    message: format!("not a complete JSON record ({e}); only the last line of a results file may be cut short"),
                });
            }
        }
        if last && !has_newline {
            return Ok((out, bytes.len(), true));
        }
        start = next;
    }
    Ok((out, bytes.len(), false))
}

/// The complete records of a JSON Lines text (a results file's bytes), ignoring a torn last
/// line; any other malformed line is an error naming `path` and the line.
pub fn parse_jsonl<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<Vec<T>> {
    Ok(parse_records(bytes, path)?.0)
}

/// Reads the complete records of a JSON Lines file (a missing file has none), ignoring a torn
/// last line.
pub fn read_records<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse_records(&bytes, path)?.0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// How [`JsonlWriter::open`] treats records already in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Keep them and append after them (a torn last line is removed first).
    Resume,
    /// Refuse a file that already holds anything, so finished work is never overwritten.
    New,
}

/// An append-only JSON Lines file whose every line reaches the disk before `append` returns.
#[derive(Debug)]
pub struct JsonlWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl JsonlWriter {
    /// Opens `path` for appending, creating it when missing, and returns the complete records it
    /// already holds. With [`OpenMode::Resume`] a torn last line is cut off the file (the bytes
    /// before it are not rewritten); with [`OpenMode::New`] a non-empty file is an error.
    pub fn open<T: DeserializeOwned>(path: &Path, mode: OpenMode) -> Result<(Self, Vec<T>)> {
        let refused = |message: String| Error::InvalidInput { what: path.display().to_string(), message };
        if path.is_dir() {
            return Err(refused("is a folder: give the path of a file for the results".into()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(refused(format!("the folder {} does not exist", parent.display())));
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        if mode == OpenMode::New && !bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::InvalidInput {
                what: path.display().to_string(),
                message: "the output file already holds results; resume it, or choose another output file (it is never overwritten)".into(),
            });
        }
        let (records, complete_len, missing_newline) = parse_records::<T>(&bytes, path)?;
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        if complete_len < bytes.len() {
            file.set_len(complete_len as u64).and_then(|()| file.sync_data()).map_err(|e| Error::io(path, e))?;
        }
        if missing_newline {
            file.write_all(b"\n").and_then(|()| file.sync_data()).map_err(|e| Error::io(path, e))?;
        }
        Ok((JsonlWriter { file, path: path.to_path_buf() }, records))
    }

    /// Appends one record as one line and syncs it to disk.
    pub fn append<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| Error::json(&self.path, &e))?;
        line.push(b'\n');
        // One write per line: an interruption tears at most this line.
        self.file.write_all(&line).and_then(|()| self.file.sync_data()).map_err(|e| Error::io(&self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize, Serialize)]
    struct R {
        n: u32,
    }

    #[test]
    fn resume_cuts_a_torn_tail_and_keeps_the_bytes_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let (mut w, kept) = JsonlWriter::open::<R>(&path, OpenMode::New).unwrap();
        assert!(kept.is_empty());
        w.append(&R { n: 1 }).unwrap();
        w.append(&R { n: 2 }).unwrap();
        drop(w);
        // A second fresh run refuses the file.
        let e = JsonlWriter::open::<R>(&path, OpenMode::New).unwrap_err().to_string();
        assert!(e.contains("out.jsonl") && e.contains("already holds"), "{e}");
        // A torn third line (even one cut inside a multi-byte character) is removed on resume.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"n\": 3, \"s\": \"\xc3");
        std::fs::write(&path, &bytes).unwrap();
        let (mut w, kept) = JsonlWriter::open::<R>(&path, OpenMode::Resume).unwrap();
        assert_eq!(kept, vec![R { n: 1 }, R { n: 2 }]);
        w.append(&R { n: 3 }).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
        // A complete last record without its newline is kept and the newline added.
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2}").unwrap();
        let (mut w, kept) = JsonlWriter::open::<R>(&path, OpenMode::Resume).unwrap();
        assert_eq!(kept.len(), 2);
        w.append(&R { n: 3 }).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    }

    #[test]
    fn a_bad_line_before_the_last_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"n\":1}\nnot json\n{\"n\":2}\n").unwrap();
        let e = read_records::<R>(&path).unwrap_err().to_string();
        assert!(e.contains("out.jsonl, line 2"), "{e}");
        let e = JsonlWriter::open::<R>(&path, OpenMode::Resume).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        // The file is left as it was.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":1}\nnot json\n{\"n\":2}\n");
        assert!(read_records::<R>(&dir.path().join("missing.jsonl")).unwrap().is_empty());
    }
}
