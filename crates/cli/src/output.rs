//! Output formats: tables for people, JSON and YAML for programs.

use comfy_table::{presets, Table};
use serde::Serialize;

use crate::CliError;

/// How to print a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML (a table is asked for as JSON).
pub fn print_structured<T: Serialize>(value: &T, format: Format) -> Result<(), CliError> {
    let text = match format {
        Format::Yaml => {
            serde_norway::to_string(value).map_err(|e| CliError::Output(e.to_string()))?
        }
        _ => serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?,
    };
    println!("{}", text.trim_end());
    Ok(())
}

/// Prints a status response as crictl's inspect verbs do: the status, and
/// `info` parsed from its JSON strings; a table is asked for as JSON.
pub fn print_status<T: Serialize>(
    status: &T,
    info: &std::collections::HashMap<String, String>,
    format: Format,
) -> Result<(), CliError> {
    let mut out = serde_json::json!({ "status": status });
    for (k, v) in info {
        out[k] = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
    }
    print_structured(&out, format)
}

/// A borderless table like crictl's.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().copied());
    t
}

/// Prints a table aligned like crictl's (no left margin, three spaces
/// between columns, nothing at line ends).
pub fn print_table(t: &mut Table) {
    for c in t.column_iter_mut() {
        c.set_padding((0, 3));
    }
    for line in t.lines() {
        println!("{}", line.trim_end());
    }
}

/// Sizes as crictl prints them: decimal units, 3 significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    // Three significant digits, like Go's %.3g.
    let int_digits = if v < 1.0 {
        1
    } else {
        v.log10().floor() as usize + 1
    };
    let decimals = 3usize.saturating_sub(int_digits);
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[i])
}

/// The first 13 characters of an id without its algorithm, as crictl shows.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(13).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(2_211_840), "2.21MB");
        assert_eq!(human_size(104_857_600), "105MB");
        assert_eq!(human_size(304_900), "305kB");
        assert_eq!(
            short_id(&format!("sha256:{}", "ab".repeat(32))),
            "ababababababa"
        );
    }
}
