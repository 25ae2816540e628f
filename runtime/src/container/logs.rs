//! Container logs: one line per output line, in the CRI log format
//! `TIMESTAMP STREAM TAG TEXT` (`2026-01-02T03:04:05.123456789Z stdout F
//! hello`; tag `F` for a full line, `P` for a partial one cut at the line
//! length cap or at the stream's end). The file is rotated to
//! `container.log.1` when it reaches its size cap, so a chatty container
//! costs at most twice the cap on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest line kept whole; longer ones are split into partial lines.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 timestamp with nanoseconds, UTC.
    pub timestamp: String,
    /// The stream.
    pub stream: Stream,
    /// False when the line was cut (no newline followed it).
    pub full: bool,
    /// The text, without its newline.
    pub text: String,
}

impl LogLine {
    /// Parses a stored line; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.splitn(4, ' ');
        let timestamp = parts.next()?.to_string();
        let stream = match parts.next()? {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            _ => return None,
        };
        let full = parts.next()? == "F";
        let text = parts.next().unwrap_or("").to_string();
        Some(LogLine {
            timestamp,
            stream,
            full,
            text,
        })
    }
}

/// Formats a time as RFC 3339 UTC with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Writes a container's log, splitting its streams into lines and rotating
/// at the size cap. Used by the shim.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    rotated: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending to) the log at `path`, rotating to `rotated`.
    pub fn open(path: &Path, rotated: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            rotated: rotated.to_path_buf(),
            max_bytes: max_bytes.max(1024),
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Takes bytes read from `stream`; writes every complete line.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> std::io::Result<()> {
        let i = stream as usize;
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.pending[i]);
            line.extend_from_slice(&data[..nl]);
            self.emit(stream, &line, true)?;
            data = &data[nl + 1..];
        }
        self.pending[i].extend_from_slice(data);
        while self.pending[i].len() >= MAX_LINE {
            let rest = self.pending[i].split_off(MAX_LINE);
            let chunk = std::mem::replace(&mut self.pending[i], rest);
            self.emit(stream, &chunk, false)?;
        }
        Ok(())
    }

    /// Writes what is left of `stream` without a newline (at its end).
    pub fn flush_partial(&mut self, stream: Stream) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.pending[stream as usize]);
        if !line.is_empty() {
            self.emit(stream, &line, false)?;
        }
        Ok(())
    }

    fn emit(&mut self, stream: Stream, text: &[u8], full: bool) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(text.len() + 48);
        out.extend_from_slice(rfc3339(SystemTime::now()).as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.as_str().as_bytes());
        out.extend_from_slice(if full { b" F " } else { b" P " });
        out.extend_from_slice(text);
        out.push(b'\n');
        if self.size > 0 && self.size + out.len() as u64 > self.max_bytes {
            fs::rename(&self.path, &self.rotated)?;
            self.file = open_append(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Reads every stored line, oldest first (the rotated file, then the current one).
pub fn read_all(path: &Path, rotated: &Path) -> std::io::Result<Vec<LogLine>> {
    read_upto(path, rotated, u64::MAX)
}

/// Like [`read_all`], reading the current file only up to byte `limit`
/// (where a [`Follower`] started).
pub fn read_upto(path: &Path, rotated: &Path, limit: u64) -> std::io::Result<Vec<LogLine>> {
    let mut lines = Vec::new();
    for (p, limit) in [(rotated, u64::MAX), (path, limit)] {
        match File::open(p) {
            Ok(f) => {
                for line in BufReader::new(f.take(limit)).split(b'\n') {
                    if let Some(l) = LogLine::parse(&String::from_utf8_lossy(&line?)) {
                        lines.push(l);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(lines)
}

/// Follows the current log file from byte `offset`: returns the complete
/// lines appended since and the new offset. A rotation (the file shrank or
/// was replaced) restarts at 0.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts following `path` at its current end.
    pub fn at_end(path: &Path) -> Self {
        let meta = fs::metadata(path).ok();
        Self {
            path: path.to_path_buf(),
            offset: meta.as_ref().map_or(0, |m| m.len()),
            inode: meta.map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
            partial: Vec::new(),
        }
    }

    /// The byte offset in the current file up to which lines were read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The lines appended since the last call.
    pub fn poll(&mut self) -> std::io::Result<Vec<LogLine>> {
        let Ok(mut f) = File::open(&self.path) else {
            return Ok(Vec::new());
        };
        let meta = f.metadata()?;
        let ino = std::os::unix::fs::MetadataExt::ino(&meta);
        if self.inode != Some(ino) || meta.len() < self.offset {
            self.inode = Some(ino);
            self.offset = 0;
            self.partial.clear();
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut out = Vec::new();
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            if let Some(l) = LogLine::parse(String::from_utf8_lossy(&line[..nl]).as_ref()) {
                out.push(l);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000000005Z");
    }

    #[test]
    fn lines_streams_partials_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (log, old) = (dir.path().join("c.log"), dir.path().join("c.log.1"));
        let mut w = LogWriter::open(&log, &old, 2048).unwrap();
        w.write(Stream::Stdout, b"one\ntw").unwrap();
        w.write(Stream::Stderr, b"err\n").unwrap();
        w.write(Stream::Stdout, b"o\n").unwrap();
        w.write(Stream::Stdout, b"tail").unwrap();
        w.flush_partial(Stream::Stdout).unwrap();
        let lines = read_all(&log, &old).unwrap();
        let got: Vec<(Stream, bool, &str)> = lines
            .iter()
            .map(|l| (l.stream, l.full, l.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, true, "one"),
                (Stream::Stderr, true, "err"),
                (Stream::Stdout, true, "two"),
                (Stream::Stdout, false, "tail"),
            ]
        );
        for i in 0..200 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(fs::metadata(&log).unwrap().len() <= 2048);
        assert!(old.exists());
        let all = read_all(&log, &old).unwrap();
        assert_eq!(all.last().unwrap().text, "line 199");
        assert!(all.len() < 204, "old lines beyond two files are dropped");
        let texts: Vec<&str> = all.iter().map(|l| l.text.as_str()).collect();
        let mut sorted = texts.clone();
        sorted.sort_by_key(|t| t.trim_start_matches("line ").parse::<u32>().unwrap_or(0));
        assert_eq!(texts, sorted, "order kept across rotation");
    }

    #[test]
    fn long_lines_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let (log, old) = (dir.path().join("c.log"), dir.path().join("c.log.1"));
        let mut w = LogWriter::open(&log, &old, 1 << 20).unwrap();
        w.write(Stream::Stdout, &vec![b'x'; MAX_LINE + 10]).unwrap();
        w.write(Stream::Stdout, b"\n").unwrap();
        let lines = read_all(&log, &old).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(!lines[0].full && lines[1].full);
        assert_eq!(lines[0].text.len() + lines[1].text.len(), MAX_LINE + 10);
    }

    #[test]
    fn follower_sees_appends_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (log, old) = (dir.path().join("c.log"), dir.path().join("c.log.1"));
        let mut w = LogWriter::open(&log, &old, 1024).unwrap();
        w.write(Stream::Stdout, b"before\n").unwrap();
        let mut f = Follower::at_end(&log);
        assert!(f.poll().unwrap().is_empty());
        w.write(Stream::Stdout, b"after\n").unwrap();
        assert_eq!(f.poll().unwrap()[0].text, "after");
        for _ in 0..30 {
            w.write(
                Stream::Stdout,
                b"0123456789012345678901234567890123456789\n",
            )
            .unwrap();
        }
        w.write(Stream::Stdout, b"last\n").unwrap();
        let seen = f.poll().unwrap();
        assert_eq!(seen.last().unwrap().text, "last");
    }
}
