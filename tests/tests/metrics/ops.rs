//! The operator artefacts in `ops/` name only what the router exports: every
//! `switchboard_*` and `process_*` metric in the alert rules' `expr`s and the
//! dashboard's queries has a `# TYPE` line in a real router's `/metrics`,
//! every label value they match exactly is exported, and every router
//! metric is on the dashboard. (`ops/check.sh` checks their syntax with
//! promtool.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use switchboard_tests::{http_get, TestServer};

/// A metric named in a query, with the `label="value"` matchers on it.
#[derive(Debug)]
struct Selector {
    name: String,
    exact: Vec<(String, String)>,
}

/// Labels Prometheus adds at scrape time: not in `/metrics`.
const TARGET_LABELS: &[&str] = &["job", "instance"];

fn ops_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ops")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `expr`s of a Prometheus rules file, read without a YAML parser (the
/// tests crate has none): an `expr:` key's value is the rest of its line
/// (without quotes), or after `|` or `>` the lines below it indented deeper
/// than the key.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - trimmed.len();
            let mut block = String::new();
            while let Some(next) =
                lines.next_if(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            {
                block.push_str(next.trim());
                block.push('\n');
            }
            exprs.push(block);
        } else {
            exprs.push(value.trim_matches(['"', '\'']).to_owned());
        }
    }
    exprs
}

/// The queries of a Grafana dashboard: every `expr` (panel targets, rows
/// included) and the template variables' queries.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        let query = &variable["query"];
        if variable["type"] == "query" {
            let query = query["query"].as_str().or(query.as_str());
            exprs.push(query.expect("a query variable's query").to_owned());
        }
    }
    exprs
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The `switchboard_*` and `process_*` metrics a PromQL expression names:
/// identifiers (`[a-zA-Z_:][a-zA-Z0-9_:]*`) outside quoted strings, each
/// with the `label="value"` matchers of the `{...}` after it.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c.is_ascii_digit() {
            // A number or a duration (`5m`, `1e9`): no identifier inside.
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            if name.starts_with("switchboard_") || name.starts_with("process_") {
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let exact = if chars.get(j) == Some(&'{') {
                    let end = (j..chars.len())
                        .find(|&k| chars[k] == '}')
                        .unwrap_or_else(|| panic!("unclosed matchers in {expr}"));
                    let matchers: String = chars[j + 1..end].iter().collect();
                    i = end + 1;
                    exact_matchers(&matchers)
                } else {
                    Vec::new()
                };
                found.push(Selector { name, exact });
            }
        } else {
            i += 1;
        }
    }
    found
}

/// The index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The `label="value"` matchers of a `{...}` body (no value holds a comma);
/// `!=`, `=~` and `!~` are left out.
fn exact_matchers(body: &str) -> Vec<(String, String)> {
    body.split(',')
        .filter_map(|matcher| {
            let (label, value) = matcher.split_once('=')?;
            let label = label.trim();
            if label.ends_with('!') || value.starts_with('~') {
                return None;
            }
            Some((label.to_owned(), value.trim().trim_matches('"').to_owned()))
        })
        .filter(|(label, _)| !label.is_empty())
        .collect()
}

/// The metric a series name belongs to: a histogram's `_bucket`, `_sum`
/// and `_count` series belong to the histogram.
fn base_name<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|kind| kind == "histogram") {
                return base;
            }
        }
    }
    name
}

#[tokio::test]
async fn the_alert_rules_and_the_dashboard_use_only_exported_metrics() {
    // No session: the other test's exact counts stay its own.
    let server = TestServer::start_full(|_| {}, Some(super::recorder())).await;
    let (status, scrape) = http_get(server.admin, "/metrics").await;
    assert_eq!(status, 200, "{scrape}");
    // Metric name -> kind, from the `# TYPE name kind` lines.
    let types: BTreeMap<String, String> = scrape
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect();

    let rules = ops_file("prometheus/alerts.yml");
    let rule_exprs = rule_exprs(&rules);
    let rule_count = rules
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- alert:") || l.starts_with("- record:")
        })
        .count();
    assert_eq!(
        rule_exprs.len(),
        rule_count,
        "one expr per rule in alerts.yml: {rule_exprs:#?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&ops_file("grafana/switchboard.json")).expect("dashboard JSON");
    let dashboard_exprs = dashboard_exprs(&dashboard);

    let mut used = BTreeMap::new();
    for (file, exprs) in [
        ("alerts.yml", &rule_exprs),
        ("switchboard.json", &dashboard_exprs),
    ] {
        let mut names = BTreeSet::new();
        for expr in exprs {
            for selector in selectors(expr) {
                let name = base_name(&selector.name, &types).to_owned();
                assert!(
                    types.contains_key(&name),
                    "{file} uses {}, which /metrics does not export (in `{expr}`)",
                    selector.name
                );
                for (label, value) in &selector.exact {
                    if TARGET_LABELS.contains(&label.as_str()) {
                        continue;
                    }
                    let wanted = format!("{label}=\"{value}\"");
                    assert!(
                        scrape.lines().any(|line| line
                            .strip_prefix(selector.name.as_str())
                            .is_some_and(|rest| rest.starts_with('{') && rest.contains(&wanted))),
                        "{file} matches {}{{{wanted}}}, a series /metrics does not export (in `{expr}`)",
                        selector.name
                    );
                }
                names.insert(name);
            }
        }
        used.insert(file, names);
    }
    // The parsing found what it should: an empty set would pass the loop.
    assert!(used["alerts.yml"].len() >= 10, "{used:#?}");
    assert!(used["switchboard.json"].len() >= 20, "{used:#?}");
    let missing: Vec<&String> = types
        .keys()
        .filter(|name| {
            name.starts_with("switchboard_") && !used["switchboard.json"].contains(*name)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "metrics with no panel in ops/grafana/switchboard.json: {missing:?}"
    );
}

#[test]
fn the_expression_parser_finds_names_and_exact_matchers() {
    let found = selectors(
        r#"sum by (le) (rate(switchboard_x_bucket{job="a", reason="b", o=~"c.*", p!="d"}[5m]))
            / on(instance) process_max_fds > 1e9 and "switchboard_in_a_string""#,
    );
    let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["switchboard_x_bucket", "process_max_fds"]);
    assert_eq!(
        found[0].exact,
        [
            ("job".to_owned(), "a".to_owned()),
            ("reason".to_owned(), "b".to_owned())
        ]
    );
    let yaml = "  - alert: A\n    expr: up == 0\n    for: 1m\n  - alert: B\n    expr: |\n      a\n        / b\n    for: 2m\n";
    assert_eq!(rule_exprs(yaml), ["up == 0", "a\n/ b\n"]);
}
