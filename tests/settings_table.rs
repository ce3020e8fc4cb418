//! README's configuration table is the code's table: the Markdown table under
//! "## Configuration" lists, row for row and in order, the variable, key and
//! default of every entry of `heroku_lb::config::table::SETTINGS`, so the
//! documentation cannot drift from what `load()` reads.

use heroku_lb::config::table::{Key, Setting, SETTINGS};

/// The README row the code's table gives for `setting`.
fn expected_row(setting: &Setting) -> String {
    format!(
        "| `{}` | {} | {} | {} |",
        setting.var,
        key_cell(setting.key),
        default_cell(setting.default),
        setting.meaning
    )
}

fn key_cell(key: Key) -> String {
    match key {
        Key::Section(key) => format!("`{key}`"),
        Key::Pingora(key) => format!("Pingora's `{key}`"),
        Key::None => "–".to_string(),
    }
}

fn default_cell(default: &str) -> String {
    if default.is_empty() {
        "–".to_string()
    } else {
        format!("`{default}`")
    }
}

/// The cells of a Markdown table row, trimmed.
fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(|cell| cell.trim().to_string())
        .collect()
}

/// The body rows of the first table under `## Configuration` (before the next `##`).
fn readme_rows() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let section: Vec<&str> = text
        .lines()
        .skip_while(|line| line.trim() != "## Configuration")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .collect();
    assert!(
        !section.is_empty(),
        "README.md has no \"## Configuration\" section"
    );
    let table: Vec<&str> = section
        .iter()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .copied()
        .collect();
    assert!(
        table.len() > 2,
        "no table under README's \"## Configuration\""
    );
    assert_eq!(
        cells(table[0]).len(),
        4,
        "header should be Variable | Key | Default | Meaning: {}",
        table[0]
    );
    table[2..].iter().map(|line| line.to_string()).collect()
}

/// Every row of README's configuration table names the variable, key and
/// default of the code's table, in the same order, and no row is missing or extra.
#[test]
fn readmes_configuration_table_matches_the_codes_table() {
    let rows = readme_rows();
    let got: Vec<Vec<String>> = rows
        .iter()
        .map(|row| cells(row).into_iter().take(3).collect())
        .collect();
    let want: Vec<Vec<String>> = SETTINGS
        .iter()
        .map(|setting| {
            vec![
                format!("`{}`", setting.var),
                key_cell(setting.key),
                default_cell(setting.default),
            ]
        })
        .collect();
    let table: Vec<String> = SETTINGS.iter().map(expected_row).collect();
    assert!(
        got == want,
        "README's configuration table differs from heroku_lb::config::table::SETTINGS.\n\
         First difference: {:?}\n\
         Replace the table's body with:\n\n{}\n",
        got.iter()
            .zip(&want)
            .find(|(got, want)| got != want)
            .map(|(got, want)| format!("README {got:?}, code {want:?}"))
            .unwrap_or_else(|| format!("README has {} rows, code {}", got.len(), want.len())),
        table.join("\n")
    );
}
