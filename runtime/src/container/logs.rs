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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

    /// When the line was written; `None` when its timestamp does not parse.
    pub fn time(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.timestamp)
    }
}

/// Which lines `logs --since/--until` keep: written at or after `since`
/// and at or before `until` (both inclusive, as in Docker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeFilter {
    /// Skip lines older than this.
    pub since: Option<SystemTime>,
    /// Skip lines newer than this.
    pub until: Option<SystemTime>,
}

impl TimeFilter {
    /// Whether `line` passes. A line whose timestamp does not parse passes
    /// only when there is no bound.
    pub fn keeps(&self, line: &LogLine) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = line.time() else {
            return false;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

/// Parses a `logs --since`/`--until` value as Docker does: an RFC 3339
/// timestamp (`2026-11-23T10:00:00Z`, with fractional seconds or an offset
/// such as `+02:00`), a Unix timestamp (`1700000000`, `1700000000.5`), or
/// a duration with units (`45s`, `10m`, `1h30m`) meaning `now` minus it.
pub fn parse_time_arg(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty time: give an RFC 3339 timestamp (2026-11-23T10:00:00Z), a Unix timestamp or a duration such as 10m".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return parse_unix(t).ok_or_else(|| format!("\"{s}\" is not a valid Unix timestamp"));
    }
    if t.as_bytes().first().is_some_and(u8::is_ascii_digit) && t.contains('-') {
        return parse_rfc3339(t).ok_or_else(|| {
            format!(
                "\"{s}\" is not an RFC 3339 timestamp with a time zone, such as 2026-11-23T10:00:00Z or 2026-11-23T12:00:00.5+02:00"
            )
        });
    }
    let d = moor_spec::units::parse_duration(t).map_err(|_| {
        format!(
            "\"{s}\" is neither a timestamp (2026-11-23T10:00:00Z, 1700000000) nor a duration such as 45s, 10m or 1h30m"
        )
    })?;
    Ok(now.checked_sub(d).unwrap_or(UNIX_EPOCH))
}

/// `SECONDS[.FRACTION]` since the epoch.
fn parse_unix(s: &str) -> Option<SystemTime> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || frac.contains('.') {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, fraction_nanos(frac)?))
}

/// The nanoseconds of the digits after a decimal point (beyond 9 dropped).
fn fraction_nanos(digits: &str) -> Option<u32> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos = 0u32;
    for i in 0..9 {
        nanos = nanos * 10 + digits.as_bytes().get(i).map_or(0, |b| u32::from(b - b'0'));
    }
    Some(nanos)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.F…](Z|±HH:MM)` (RFC 3339; `t`, `z` and a
/// space instead of `T` accepted). Times before 1970 are `None`.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    fn num(s: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().filter(|n| range.contains(n))
    }
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = num(s.get(0..4)?, 0..=9999)?;
    let month = num(s.get(5..7)?, 1..=12)?;
    let day = num(s.get(8..10)?, 1..=31)?;
    let hour = num(s.get(11..13)?, 0..=23)?;
    let minute = num(s.get(14..16)?, 0..=59)?;
    let second = num(s.get(17..19)?, 0..=60)?;
    let mut rest = s.get(19..)?;
    let mut nanos = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        if n == 0 {
            return None;
        }
        nanos = fraction_nanos(&r[..n])?;
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (num(&rest[1..3], 0..=23)? * 3600 + num(&rest[4..6], 0..=59)? * 60)
        }
    };
    if day > days_in_month(year, month) {
        return None;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000000005Z");
    }

    #[test]
    fn rfc3339_round_trips_and_takes_offsets() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_709_210_096, 5),
            UNIX_EPOCH + Duration::new(951_782_400, 999_999_999),
            UNIX_EPOCH + Duration::new(4_102_444_799, 0),
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        let at = |secs, nanos| Some(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56Z"), at(1_709_210_096, 0));
        assert_eq!(
            parse_rfc3339("2024-02-29t12:34:56.5z"),
            at(1_709_210_096, 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29 14:34:56+02:00"),
            at(1_709_210_096, 0)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T07:04:56.25-05:30"),
            at(1_709_210_096, 250_000_000)
        );
        for bad in [
            "2024-02-29T12:34:56",
            "2024-02-30T12:34:56Z",
            "2023-02-29T12:34:56Z",
            "2024-13-01T00:00:00Z",
            "2024-02-29T24:00:00Z",
            "2024-02-29T12:34:56.Z",
            "2024-02-29T12:34:56+0200",
            "1969-12-31T23:59:59Z",
            "2024-02-29",
            "2024-02-29T12:34:56Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn since_values_as_docker_takes_them() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let p = |s| parse_time_arg(s, now);
        assert_eq!(
            p("1700000000"),
            Ok(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            p("1700000000.5"),
            Ok(UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000))
        );
        assert_eq!(
            p("2023-11-14T22:13:20.000000001Z"),
            Ok(UNIX_EPOCH + Duration::new(1_700_000_000, 1))
        );
        assert_eq!(p("10m"), Ok(now - Duration::from_secs(600)));
        assert_eq!(p("1h30m"), Ok(now - Duration::from_secs(5400)));
        assert_eq!(p(" 45s "), Ok(now - Duration::from_secs(45)));
        assert!(p("").unwrap_err().contains("empty"));
        for bad in [
            "yesterday",
            "1.2.3",
            "10x",
            "2023-11-14",
            "-5m",
            "1700000000.5e",
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_time_filter_is_inclusive() {
        let line = |ts: &str| LogLine::parse(&format!("{ts} stdout F x")).unwrap();
        let t = |s| parse_rfc3339(s).unwrap();
        let f = TimeFilter {
            since: Some(t("2026-01-01T00:00:01Z")),
            until: Some(t("2026-01-01T00:00:02Z")),
        };
        assert!(!f.keeps(&line("2026-01-01T00:00:00.999999999Z")));
        assert!(f.keeps(&line("2026-01-01T00:00:01.000000000Z")));
        assert!(f.keeps(&line("2026-01-01T00:00:02.000000000Z")));
        assert!(!f.keeps(&line("2026-01-01T00:00:02.000000001Z")));
        assert!(!f.keeps(&line("garbage")));
        assert!(TimeFilter::default().keeps(&line("garbage")));
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
