//! The pieces of summary.md: numbers with thousands separators and
//! markdown tables (tabled).

use tabled::builder::Builder;
use tabled::grid::config::Offset;
use tabled::settings::object::{Columns, Object as _, Rows};
use tabled::settings::style::LineChar;
use tabled::settings::{Alignment, Style};

/// A whole number with thousands separators.
pub(crate) fn thousands_i(v: u64) -> String {
    grouped(u128::from(v))
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
        Ok(n) if frac.is_empty() => format!("{sign}{}", grouped(n)),
        Ok(n) => format!("{sign}{}.{frac}", grouped(n)),
        // inf, NaN
        Err(_) => text,
    }
}

/// `n` with a `,` between groups of three digits (`1,234,567`), as
/// summary.md has always shown numbers (num-format's English locale,
/// which this replaced: one loop needs no crate, and that one had no
/// release since 2022). Unsigned: [`decimal`] puts the sign back itself.
fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
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
    fn digits_are_grouped_in_threes_from_the_right() {
        let cases: [(u128, &str); 9] = [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1000, "1,000"),
            (12_345, "12,345"),
            (123_456, "123,456"),
            (1_234_567, "1,234,567"),
            (u128::from(u64::MAX), "18,446,744,073,709,551,615"),
            (
                u128::MAX,
                "340,282,366,920,938,463,463,374,607,431,768,211,455",
            ),
        ];
        for (n, want) in cases {
            assert_eq!(grouped(n), want);
        }
        assert_eq!(thousands_i(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(decimal(-1234567.25, 2), "-1,234,567.25");
        assert_eq!(thousands(-0.4), "-0");
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
