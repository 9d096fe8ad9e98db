//! The pieces of summary.md: numbers with thousands separators
//! (num-format) and markdown tables (tabled).

use num_format::{Locale, ToFormattedString as _};
use tabled::builder::Builder;
use tabled::grid::config::Offset;
use tabled::settings::object::{Columns, Object as _, Rows};
use tabled::settings::style::LineChar;
use tabled::settings::{Alignment, Style};

/// A whole number with thousands separators.
pub(crate) fn thousands_i(v: u64) -> String {
    v.to_formatted_string(&Locale::en)
}

/// `v` rounded to a whole number, with thousands separators.
pub(crate) fn thousands(v: f64) -> String {
    decimal(v, 0)
}

/// `v` with `decimals` decimals and thousands separators.
pub(crate) fn decimal(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let (sign, digits) = text.split_at(usize::from(text.starts_with('-')));
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    match whole.parse::<u128>() {
        Ok(n) if frac.is_empty() => format!("{sign}{}", n.to_formatted_string(&Locale::en)),
        Ok(n) => format!("{sign}{}.{frac}", n.to_formatted_string(&Locale::en)),
        // inf, NaN
        Err(_) => text,
    }
}

/// A markdown table of `head` over `rows`: the first `left` columns
/// aligned left, the others (numbers) right.
pub(crate) fn table<R>(head: &[&str], rows: impl IntoIterator<Item = R>, left: usize) -> String
where
    R: IntoIterator<Item = String>,
{
    let mut builder = Builder::new();
    builder.push_record(head.iter().copied());
    for row in rows {
        builder.push_record(row);
    }
    let mut table = builder.build();
    table.with(Style::markdown());
    table.modify(Columns::new(left..), Alignment::right());
    table.modify(
        Rows::one(1).intersect(Columns::new(left..)),
        LineChar::horizontal(':', Offset::End(0)),
    );
    table.to_string()
}

/// The text with runs of spaces squeezed to one, for tests that look
/// for a table's row: cells are padded to their column's width.
#[cfg(test)]
pub(crate) fn squeeze(md: &str) -> String {
    let mut out = String::new();
    for c in md.chars() {
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(10_997_362.4), "10,997,362");
        assert_eq!(thousands(-1234.0), "-1,234");
        assert_eq!(thousands_i(1_000_000), "1,000,000");
        assert_eq!(decimal(3305.94, 1), "3,305.9");
        assert_eq!(decimal(0.25, 2), "0.25");
        assert_eq!(decimal(17.08, 2), "17.08");
        assert_eq!(decimal(1720.3, 1), "1,720.3");
        assert_eq!(thousands(f64::NAN), "NaN");
        assert_eq!(thousands(f64::INFINITY), "inf");
    }

    #[test]
    fn tables_are_markdown_with_numbers_right() {
        let t = table(
            &["case", "clients", "delivered/s"],
            [["paced".to_owned(), "50".to_owned(), "1,000".to_owned()]],
            1,
        );
        assert_eq!(
            t,
            "| case  | clients | delivered/s |\n\
             |-------|--------:|------------:|\n\
             | paced |      50 |       1,000 |"
        );
        // No rows, no alignment to show.
        let empty = table(&["a", "b"], Vec::<Vec<String>>::new(), 0);
        assert_eq!(empty, "| a | b |\n|---|---|");
    }
}
