//! Sizes (`64m`, `1g`) and durations (`500ms`, `2s`, `1m30s`).

use std::time::Duration;

/// Parses a size in bytes: a number with an optional binary unit
/// (`b`, `k`, `m`, `g`, `t`; `kb`/`kib`/`mb`/`mib`… too, all powers of 1024 as in Docker).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "size \"{s}\" must be a number with an optional unit, such as 64m"
        ));
    }
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "size \"{s}\" has an unknown unit \"{other}\" (use b, k, m, g or t)"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("size \"{s}\" must be a number with an optional unit, such as 64m"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size \"{s}\" is too large"));
    }
    Ok(bytes as u64)
}

/// A size for people: `4 MiB`, `512 KiB`, `1000 bytes` (binary units, only
/// when exact).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Parses a duration written with units, Go style as Compose does:
/// `500ms`, `2s`, `5m`, `1h`, `1m30s`, `1.5s`; `us` and `ns` too.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("duration \"{s}\" must be a number with a unit, such as 500ms, 2s, 5m or 1h");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[u..];
        total += value * seconds;
    }
    if !total.is_finite() || total > 100.0 * 365.0 * 86400.0 {
        return Err(format!("duration \"{s}\" is too long"));
    }
    Ok(Duration::from_nanos((total * 1e9).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let table = [
            ("1024", 1024),
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("1g", 1 << 30),
            ("512k", 512 << 10),
            ("1.5g", 3 << 29),
            ("10b", 10),
            ("2MiB", 2 << 20),
            ("1t", 1 << 40),
        ];
        for (s, want) in table {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for bad in ["", "m", "64x", "-1m", "1..5m", "99999999999t"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        let table = [
            ("500ms", ms(500)),
            ("2s", ms(2000)),
            ("5m", ms(300_000)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1.5s", ms(1500)),
            ("0", ms(0)),
            ("250us", Duration::from_micros(250)),
        ];
        for (s, want) in table {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for bad in ["", "5", "s", "5 s", "5d", "1m30", "-1s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
