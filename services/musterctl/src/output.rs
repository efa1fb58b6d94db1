//! Tables for people, JSON for scripts.
//!
//! A table cell is shown on one line and cut to [`MAX_CELL_WIDTH`] terminal columns: values
//! come from workers and operators (labels, KV values) and may hold newlines, control
//! characters, wide characters or 70,000 bytes; `-o json` prints them whole.

use clap::ValueEnum;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people; long values are cut.
    Table,
    /// Pretty-printed JSON for scripts; values are whole.
    Json,
}

/// Widest cell of a table, in terminal columns.
pub const MAX_CELL_WIDTH: usize = 64;
const ELLIPSIS: char = '…';

/// Characters that would move the cursor or reorder text: shown escaped.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `value` as one table cell: control characters escaped, at most [`MAX_CELL_WIDTH`]
/// columns, an ellipsis where it was cut.
pub fn cell(value: &str) -> String {
    let mut out = String::new();
    let mut width = 0;
    // Columns that still leave room for the ellipsis, and the output length at that point.
    let mut cut_at = None;
    for c in value.chars() {
        let escaped: String = if needs_escape(c) { c.escape_default().collect() } else { c.to_string() };
        let w: usize = escaped.chars().map(|e| e.width().unwrap_or(0)).sum();
        if width + w > MAX_CELL_WIDTH - 1 && cut_at.is_none() {
            cut_at = Some(out.len());
        }
        if width + w > MAX_CELL_WIDTH {
            let end = cut_at.unwrap_or(out.len());
            out.truncate(end);
            out.push(ELLIPSIS);
            return out;
        }
        width += w;
        out.push_str(&escaped);
    }
    out
}

/// Prints rows under a header with columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

/// The table [`print_table`] prints.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| cell(h)).collect())
        .chain(rows.iter().map(|row| row.iter().map(|c| cell(c)).collect()))
        .collect();
    let mut widths: Vec<usize> = vec![0; header.len()];
    for row in &cells {
        for (i, c) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(c.width());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            line.push_str(&" ".repeat(w.saturating_sub(c.width())));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Bytes as text when they are UTF-8, else as hex with a `0x` prefix.
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// A Unix time in seconds as RFC 3339 (UTC), or `-` when unset.
pub fn unix_time(unix_seconds: i64) -> String {
    match u64::try_from(unix_seconds) {
        Ok(seconds) if seconds > 0 => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
            humantime::format_rfc3339_seconds(at).to_string()
        }
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_as_they_are() {
        assert_eq!(cell("zone=a"), "zone=a");
        assert_eq!(cell(""), "");
        let exact = "x".repeat(MAX_CELL_WIDTH);
        assert_eq!(cell(&exact), exact);
    }

    #[test]
    fn long_values_are_cut_with_an_ellipsis() {
        let long = "y".repeat(70_000);
        let shown = cell(&long);
        assert_eq!(shown.width(), MAX_CELL_WIDTH);
        assert!(shown.ends_with(ELLIPSIS));
        let table = render_table(&["KEY", "VALUE", "REVISION"], &[vec!["big".into(), long, "7".into()]]);
        assert!(table.lines().all(|line| line.width() < 2 * MAX_CELL_WIDTH), "{table}");
        assert!(table.lines().nth(1).unwrap().ends_with("…  7"), "{table}");
    }

    #[test]
    fn newlines_and_control_characters_stay_on_one_line() {
        let shown = cell("a\nb\tc\u{1b}[31m\u{202e}d");
        assert_eq!(shown, "a\\nb\\tc\\u{1b}[31m\\u{202e}d");
        let table = render_table(&["K", "V"], &[vec!["k".into(), "line1\nline2\r".into()]]);
        assert_eq!(table.lines().count(), 2, "{table}");
    }

    #[test]
    fn wide_characters_are_measured_in_columns() {
        let wide = "界".repeat(100);
        let shown = cell(&wide);
        assert!(shown.width() <= MAX_CELL_WIDTH, "{}", shown.width());
        assert!(shown.ends_with(ELLIPSIS));
        let table = render_table(&["A", "B"], &[vec!["界界".into(), "x".into()], vec!["ab".into(), "y".into()]]);
        let columns: Vec<usize> =
            table.lines().map(|l| l.find(['x', 'y', 'B']).map(|i| l[..i].width()).unwrap()).collect();
        assert_eq!(columns, vec![6, 6, 6], "{table}");
    }

    #[test]
    fn rows_with_more_cells_than_the_header_do_not_panic() {
        let table = render_table(&["A"], &[vec!["1".into(), "2".into()], vec![]]);
        assert!(table.starts_with("A\n1"), "{table}");
    }
}
