//! The small value syntaxes of a scenario: percentages, rates, memory sizes,
//! picks. Each parser returns the message that ends up after
//! `file:line:column: path:` in a [`super::ScenarioError`].

use serde::Serialize;

/// Parses `5%` / `0.5%` into a percentage in 0..=100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let expected = "expected a percentage like `5%` (0% to 100%)";
    let t = s.trim();
    let Some(num) = t.strip_suffix('%') else {
        return Err(format!("invalid percentage `{s}`: {expected}"));
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("invalid percentage `{s}`: {expected}"))?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(format!("percentage `{s}` out of range: {expected}"));
    }
    Ok(v)
}

/// Parses a tc-style rate into bits per second: `500kbit`, `1mbit`, `1gbit`, `800bit`
/// (SI, like tc), or bytes per second `100kbps`, `1mbps` (times 8).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let expected = "expected a rate like `500kbit`, `1mbit` or `1mbps` (units bit, kbit, mbit, gbit, bps, kbps, mbps, gbps)";
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid rate `{s}`: {expected}"))?;
    let mult: f64 = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(format!("invalid rate `{s}`: {expected}")),
    };
    let bits = n * mult;
    // tc cannot shape below 8 bit/s meaningfully; anything under 1 bit/s is a typo.
    if !(1.0..=1e12).contains(&bits) {
        return Err(format!("rate `{s}` out of range: expected 1bit to 1000gbit"));
    }
    Ok(bits.round() as u64)
}

/// Docker's minimum memory limit.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// Parses a docker-style memory size into bytes: `256m`, `1g`, `1.5g`, `512k`, `64mb`,
/// `64MiB`, or a plain number of bytes. Units are binary (1k = 1024), as docker's are.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let expected = "expected a memory size like `256m` or `1g` (units b, k, m, g; binary, as docker's)";
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid memory size `{s}`: {expected}"))?;
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("invalid memory size `{s}`: {expected}")),
    };
    check_memory((n * mult).round(), s)
}

/// Checks a memory size in bytes against docker's range.
pub fn check_memory(bytes: f64, shown: &str) -> Result<u64, String> {
    if !bytes.is_finite() || bytes < MIN_MEMORY as f64 {
        return Err(format!("memory size `{shown}` out of range: docker needs at least 6m"));
    }
    if bytes > (1u64 << 50) as f64 {
        return Err(format!("memory size `{shown}` out of range: expected at most 1024t"));
    }
    Ok(bytes as u64)
}

/// Formats bytes for humans (`256 MiB`).
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if bytes.is_multiple_of(size) { format!("{} {name}", bytes / size) } else { format!("{v:.1} {name}") };
        }
    }
    format!("{bytes} B")
}

/// Formats bits per second the way tc writes rates.
pub fn format_rate(bits: u64) -> String {
    for (name, size) in [("gbit", 1_000_000_000u64), ("mbit", 1_000_000), ("kbit", 1_000)] {
        if bits >= size && bits.is_multiple_of(size) {
            return format!("{}{name}", bits / size);
        }
    }
    format!("{bits}bit")
}

/// How many nodes of a role a `{ role, pick }` target takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    /// One node, chosen by the seeded RNG.
    One,
    /// Every eligible node of the role.
    All,
    /// Exactly this many (at least 1).
    Count(u32),
    /// This percentage of the eligible nodes, rounded up (so never zero).
    Percent(f64),
}

pub const PICK_EXPECTED: &str = "expected `one`, `all`, a count like `2`, or a percentage like `50%`";

/// Parses `one`, `all`, `2`, `50%`.
pub fn parse_pick(s: &str) -> Result<Pick, String> {
    let t = s.trim();
    match t {
        "one" => return Ok(Pick::One),
        "all" => return Ok(Pick::All),
        _ => {}
    }
    if t.ends_with('%') {
        let p = parse_percent(t).map_err(|_| format!("invalid pick `{s}`: {PICK_EXPECTED} (a percentage above 0%, at most 100%)"))?;
        if p <= 0.0 {
            return Err(format!("invalid pick `{s}`: {PICK_EXPECTED} (a percentage above 0%, at most 100%)"));
        }
        return Ok(Pick::Percent(p));
    }
    match t.parse::<u32>() {
        Ok(0) => Err(format!("invalid pick `{s}`: {PICK_EXPECTED} (a count of at least 1)")),
        Ok(n) => Ok(Pick::Count(n)),
        Err(_) => Err(format!("invalid pick `{s}`: {PICK_EXPECTED}")),
    }
}

impl Pick {
    /// How many of `eligible` nodes this pick takes (may exceed `eligible` for a count:
    /// the caller turns that into an error).
    pub fn amount(self, eligible: usize) -> usize {
        match self {
            Pick::One => 1,
            Pick::All => eligible,
            Pick::Count(n) => n as usize,
            Pick::Percent(p) => ((eligible as f64) * p / 100.0).ceil().max(1.0) as usize,
        }
    }
}

impl std::fmt::Display for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pick::One => f.write_str("one"),
            Pick::All => f.write_str("all"),
            Pick::Count(n) => write!(f, "{n}"),
            Pick::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// A byte count: `65536`, `64k`, `1m`, `2g` (binary multiples; a trailing `b` or `ib`
/// is accepted).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("ib").or_else(|| t.strip_suffix('b')).unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * mult as f64) as u64),
        _ => Err(format!("invalid size `{s}`: expected whole bytes or a size like `64k`, `1m`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("5%").unwrap(), 5.0);
        assert_eq!(parse_percent("0.5%").unwrap(), 0.5);
        assert!(parse_percent("150%").unwrap_err().contains("out of range"));
        assert!(parse_percent("5").unwrap_err().contains("expected a percentage"));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1mbit").unwrap(), 1_000_000);
        assert_eq!(parse_rate("500kbit").unwrap(), 500_000);
        assert_eq!(parse_rate("1mbps").unwrap(), 8_000_000);
        assert!(parse_rate("1 furlong").is_err());
        assert!(parse_rate("0kbit").unwrap_err().contains("out of range"));
        assert_eq!(format_rate(500_000), "500kbit");
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256m").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_memory("64MiB").unwrap(), 64 << 20);
        assert!(parse_memory("256 megs").unwrap_err().contains("expected a memory size"));
        assert!(parse_memory("1m").unwrap_err().contains("at least 6m"));
        assert_eq!(format_memory(256 << 20), "256 MiB");
    }


    #[test]
    fn picks() {
        assert_eq!(parse_pick("one").unwrap(), Pick::One);
        assert_eq!(parse_pick("2").unwrap(), Pick::Count(2));
        assert_eq!(parse_pick("50%").unwrap(), Pick::Percent(50.0));
        assert_eq!(parse_bytes("64k").unwrap(), 65536);
        assert_eq!(parse_bytes("1MiB").unwrap(), 1 << 20);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_pick("0").is_err());
        assert!(parse_pick("0%").is_err());
        assert!(parse_pick("some").is_err());
        assert_eq!(Pick::Percent(50.0).amount(3), 2);
        assert_eq!(Pick::Percent(1.0).amount(3), 1);
    }

}
