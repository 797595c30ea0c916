//! The README's figure tables, rebuilt from the rows the benches printed.
//!
//! `make bench` tees every bench's output into a log; the `bench-table`
//! binary hands those logs to [`collect_rows`], which keeps the
//! `MARGAY-ROW` lines (see [`crate::report`]) and checks them: a known
//! table, unique ids, no empty field, no line break. [`rewrite`] then
//! replaces what stands between `<!-- bench-table:<table> -->` and
//! `<!-- /bench-table:<table> -->` in the README with a heading line (the
//! date of the run, the machine, the command) and the markdown table, rows
//! in the order the benches printed them. It refuses (and the README stays
//! as it was) when a table with rows has no marker pair, when a marked table
//! gets no rows, or when the markers are malformed.

use std::collections::{BTreeMap, BTreeSet};

use crate::report::{Row, Table, ROW_PREFIX};

/// Every table a row may name.
pub const TABLES: [Table; 2] = [Table::Performance, Table::LargeClusters];

/// The header of every generated table.
const HEADER: &str = "| what | margay | reference | target |\n|---|---|---|---|\n";

/// Why the rows or the README were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// A `MARGAY-ROW` line that is not the JSON object the contract says.
    #[error("{source_name}:{line}: not a row: {reason}")]
    Malformed {
        source_name: String,
        line: usize,
        reason: String,
    },
    /// A row naming a table the README does not have.
    #[error("{source_name}:{line}: unknown table {table:?}")]
    UnknownTable {
        source_name: String,
        line: usize,
        table: String,
    },
    /// A field that is empty or would break the markdown table.
    #[error("row {id:?}: field {field} {problem}")]
    BadField {
        id: String,
        field: &'static str,
        problem: &'static str,
    },
    /// Two rows with the same id.
    #[error("row id {0:?} printed twice")]
    DuplicateId(String),
    /// A table has rows but the README has no (complete) marker pair for it.
    #[error("README has no marker pair `<!-- bench-table:{0} -->` … `<!-- /bench-table:{0} -->`")]
    MissingMarkers(String),
    /// A marker appears more than once, or the end comes before the start.
    #[error("README's markers for table {0} are malformed (repeated or out of order)")]
    MalformedMarkers(String),
    /// A table marked in the README got no row in this run.
    #[error("table {0} is marked in the README but no bench printed a row for it")]
    NoRows(String),
}

/// The table named `name` in a row or a marker.
pub fn table_named(name: &str) -> Option<Table> {
    TABLES.into_iter().find(|t| t.as_str() == name)
}

/// The rows found in one bench output, in order, checked one by one (ids
/// are checked across outputs by [`collect_rows`]). `source_name` names the
/// output in errors.
pub fn parse_rows(source_name: &str, text: &str) -> Result<Vec<Row>, TableError> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(json) = line.trim_end().strip_prefix(ROW_PREFIX) else {
            continue;
        };
        let row = parse_row(source_name, index + 1, json)?;
        check_fields(&row)?;
        rows.push(row);
    }
    Ok(rows)
}

fn parse_row(source_name: &str, line: usize, json: &str) -> Result<Row, TableError> {
    let malformed = |reason: String| TableError::Malformed {
        source_name: source_name.to_owned(),
        line,
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| malformed(e.to_string()))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| malformed(format!("no string field {name:?}")))
    };
    let table_name = field("table")?;
    let table = table_named(&table_name).ok_or_else(|| TableError::UnknownTable {
        source_name: source_name.to_owned(),
        line,
        table: table_name,
    })?;
    Ok(Row {
        table,
        id: field("id")?,
        what: field("what")?,
        margay: field("margay")?,
        reference: field("reference")?,
        target: field("target")?,
    })
}

fn check_fields(row: &Row) -> Result<(), TableError> {
    let fields = [
        ("id", &row.id),
        ("what", &row.what),
        ("margay", &row.margay),
        ("reference", &row.reference),
        ("target", &row.target),
    ];
    for (field, value) in fields {
        let problem = if value.trim().is_empty() {
            Some("is empty")
        } else if value.contains(['\n', '\r']) {
            Some("holds a line break")
        } else if value.contains("<!--") || value.contains("-->") {
            Some("holds an HTML comment marker")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(TableError::BadField {
                id: row.id.clone(),
                field,
                problem,
            });
        }
    }
    Ok(())
}

/// The rows of every output, in order, with ids unique over all of them.
pub fn collect_rows<'a>(
    outputs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Row>, TableError> {
    let mut rows = Vec::new();
    let mut ids = BTreeSet::new();
    for (source_name, text) in outputs {
        for row in parse_rows(source_name, text)? {
            if !ids.insert(row.id.clone()) {
                return Err(TableError::DuplicateId(row.id));
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// A cell's text with the characters that would end the cell escaped.
pub fn escape_cell(text: &str) -> String {
    text.trim().replace('|', "\\|")
}

/// The markdown table of `rows` (header included), one line per row.
pub fn render_table(rows: &[&Row]) -> String {
    let mut out = String::from(HEADER);
    for row in rows {
        let cells = [&row.what, &row.margay, &row.reference, &row.target].map(|c| escape_cell(c));
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

fn start_marker(table: &str) -> String {
    format!("<!-- bench-table:{table} -->")
}

fn end_marker(table: &str) -> String {
    format!("<!-- /bench-table:{table} -->")
}

/// The byte range strictly between `table`'s markers, if the README has
/// exactly one well-ordered pair.
fn marked_range(readme: &str, table: &str) -> Result<Option<(usize, usize)>, TableError> {
    let (start, end) = (start_marker(table), end_marker(table));
    let starts: Vec<usize> = readme.match_indices(&start).map(|(i, _)| i).collect();
    let ends: Vec<usize> = readme.match_indices(&end).map(|(i, _)| i).collect();
    match (starts.as_slice(), ends.as_slice()) {
        ([], []) => Ok(None),
        ([s], [e]) if s + start.len() <= *e => Ok(Some((s + start.len(), *e))),
        ([_], []) | ([], [_]) => Err(TableError::MissingMarkers(table.to_owned())),
        _ => Err(TableError::MalformedMarkers(table.to_owned())),
    }
}

/// The README with every marked table replaced: `heading` (one line, the
/// run's date, machine and command) then the table of that table's rows.
/// Fails, changing nothing, when a table with rows has no marker pair or a
/// marked table has no rows.
pub fn rewrite(readme: &str, rows: &[Row], heading: &str) -> Result<String, TableError> {
    let mut by_table: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        by_table.entry(row.table.as_str()).or_default().push(row);
    }
    let mut ranges = Vec::new();
    for table in TABLES.map(Table::as_str) {
        match (marked_range(readme, table)?, by_table.get(table)) {
            (Some(range), Some(rows)) => ranges.push((range, render_table(rows))),
            (Some(_), None) => return Err(TableError::NoRows(table.to_owned())),
            (None, Some(_)) => return Err(TableError::MissingMarkers(table.to_owned())),
            (None, None) => {}
        }
    }
    ranges.sort_by_key(|((start, _), _)| *start);
    let mut out = String::with_capacity(readme.len());
    let mut done = 0;
    for ((start, end), table) in ranges {
        out.push_str(&readme[done..start]);
        out.push_str(&format!("\n{}\n\n{table}", heading.trim()));
        done = end;
    }
    out.push_str(&readme[done..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: Table, id: &str, what: &str) -> Row {
        Row {
            table,
            id: id.into(),
            what: what.into(),
            margay: "1 ms".into(),
            reference: "—".into(),
            target: "< 2 ms".into(),
        }
    }

    const README: &str = "# title\n\n## Performance\n\nText above.\n\n\
        <!-- bench-table:performance -->\nold heading\n\n| old | table |\n\
        <!-- /bench-table:performance -->\n\n## Install\nafter\n";

    #[test]
    fn only_the_text_between_the_markers_is_replaced() {
        let log = format!(
            "compiling…\n{}\nnoise\n{}\n",
            row(Table::Performance, "calc/load", "full load (`calc`)").line(),
            row(Table::Performance, "calc/one", "one update").line()
        );
        let rows = collect_rows([("calc.log", log.as_str())]).expect("rows");
        let out = rewrite(README, &rows, "Run of 2026-11-29.").expect("rewrite");
        assert_eq!(
            out,
            "# title\n\n## Performance\n\nText above.\n\n\
             <!-- bench-table:performance -->\nRun of 2026-11-29.\n\n\
             | what | margay | reference | target |\n|---|---|---|---|\n\
             | full load (`calc`) | 1 ms | — | < 2 ms |\n\
             | one update | 1 ms | — | < 2 ms |\n\
             <!-- /bench-table:performance -->\n\n## Install\nafter\n"
        );
        // Rewriting again with the same rows changes nothing.
        assert_eq!(
            rewrite(&out, &rows, "Run of 2026-11-29.").as_ref(),
            Ok(&out)
        );
    }

    #[test]
    fn a_duplicate_id_is_refused_across_logs() {
        let a = row(Table::Performance, "calc/load", "a").line();
        let b = row(Table::Performance, "calc/load", "b").line();
        assert_eq!(
            collect_rows([("a.log", a.as_str()), ("b.log", b.as_str())]),
            Err(TableError::DuplicateId("calc/load".into()))
        );
    }

    #[test]
    fn missing_markers_and_tables_without_rows_are_refused() {
        let perf = [row(Table::Performance, "x/y", "x")];
        let no_end = README.replace("<!-- /bench-table:performance -->", "");
        assert_eq!(
            rewrite(&no_end, &perf, "h"),
            Err(TableError::MissingMarkers("performance".into()))
        );
        let clusters = [
            row(Table::Performance, "x/y", "x"),
            row(Table::LargeClusters, "fanout/50", "x"),
        ];
        assert_eq!(
            rewrite(README, &clusters, "h"),
            Err(TableError::MissingMarkers("large-clusters".into()))
        );
        assert_eq!(
            rewrite(README, &[], "h"),
            Err(TableError::NoRows("performance".into()))
        );
        let twice = format!("{README}{README}");
        assert_eq!(
            rewrite(&twice, &perf, "h"),
            Err(TableError::MalformedMarkers("performance".into()))
        );
    }

    #[test]
    fn pipes_are_escaped_and_bad_fields_refused() {
        let piped = row(Table::Performance, "a/b", "either | or");
        assert_eq!(
            render_table(&[&piped]).lines().last(),
            Some("| either \\| or | 1 ms | — | < 2 ms |")
        );
        let mut empty = row(Table::Performance, "a/b", "x");
        empty.target = " ".into();
        assert!(matches!(
            collect_rows([("l", empty.line().as_str())]),
            Err(TableError::BadField {
                field: "target",
                ..
            })
        ));
        let broken = row(Table::Performance, "a/c", "two\nlines").line();
        assert!(matches!(
            collect_rows([("l", broken.as_str())]),
            Err(TableError::BadField { field: "what", .. })
        ));
    }

    #[test]
    fn unknown_tables_and_broken_json_are_refused() {
        let unknown = r#"MARGAY-ROW {"table":"other","id":"a","what":"w","margay":"m","reference":"r","target":"t"}"#;
        assert!(matches!(
            collect_rows([("l", unknown)]),
            Err(TableError::UnknownTable { .. })
        ));
        let missing = r#"MARGAY-ROW {"table":"performance","id":"a"}"#;
        assert!(matches!(
            collect_rows([("l", missing)]),
            Err(TableError::Malformed { line: 1, .. })
        ));
    }
}
