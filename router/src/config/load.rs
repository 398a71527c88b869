//! Loading a [`Config`] from its sources, defaults < TOML file <
//! `SWITCHBOARD_*` environment < flags, with each value remembered by its
//! [`Origin`]. Every problem is reported at once, in the user's words: a
//! key no section has (with the nearest one), a value of the wrong type
//! (with the default as an example), a setting [`Config::validate`] refuses,
//! each named by its key and by the file, variable or flag that set it
//! ([`Problem`], [`ConfigError`]).
//!
//! Each value is tried alone on top of the defaults, so one bad value cannot
//! hide the next; the values that pass are then merged and validated.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider};

use super::{Config, FlagOverrides};

/// `SWITCHBOARD_*` variables that are not configuration: the CLI's and the
/// binary's own. Any other `SWITCHBOARD_*` variable names a key, so a
/// misspelled one is reported instead of ignored.
const OTHER_VARIABLES: &[&str] = &[
    "SWITCHBOARD_CONFIG",
    "SWITCHBOARD_LOG",
    "SWITCHBOARD_SERVER",
    "SWITCHBOARD_TOKEN",
    "SWITCHBOARD_CA",
    "SWITCHBOARD_CERT_SHA256",
    "SWITCHBOARD_DEVICE",
    "SWITCHBOARD_HUGE_PAGE_HEAP",
];

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML file (or text, for tests).
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, by name.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::Env(name) => write!(f, "from {name}"),
            Origin::Flag(name) => write!(f, "from {name}"),
        }
    }
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key (`presence.offline_grace`), a section (`webhook`), or
    /// empty for a file as a whole.
    pub key: String,
    /// The value as given, when the value itself is the problem.
    pub value: Option<String>,
    /// Where the value came from.
    pub origin: Origin,
    /// What is wrong and what would be right.
    pub problem: String,
}

impl Problem {
    pub(super) fn invalid(key: &str, problem: String) -> Problem {
        Problem {
            key: key.to_owned(),
            value: None,
            origin: Origin::Default,
            problem,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match &self.origin {
            Origin::File(path) if self.key.is_empty() => {
                return write!(f, "{}: {}", path.display(), self.problem)
            }
            Origin::Default => String::new(),
            origin => format!(" ({origin})"),
        };
        match &self.value {
            Some(value) => write!(f, "{} = {value}{origin}: {}", self.key, self.problem),
            None => write!(f, "{}{origin}: {}", self.key, self.problem),
        }
    }
}

/// Why a configuration cannot be used: every problem found, in the order
/// of its sources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, at least one.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "the configuration has a problem: {one}"),
            all => {
                write!(f, "the configuration has {} problems:", all.len())?;
                all.iter().try_for_each(|p| write!(f, "\n  - {p}"))
            }
        }
    }
}

/// One value as one source set it.
struct Setting {
    key: String,
    value: Value,
    /// The value as the user wrote it.
    shown: String,
    origin: Origin,
}

/// The values of every source, lowest precedence first, and the problems
/// found reading them.
#[derive(Default)]
pub(super) struct Sources {
    settings: Vec<Setting>,
    problems: Vec<Problem>,
}

impl Sources {
    /// Reads a TOML file.
    pub(super) fn file(&mut self, path: &Path) {
        match std::fs::read_to_string(path) {
            Ok(text) => self.toml(&text, Origin::File(path.to_owned())),
            Err(error) => self.problems.push(Problem {
                key: String::new(),
                value: None,
                origin: Origin::File(path.to_owned()),
                problem: format!("cannot be read: {error}"),
            }),
        }
    }

    /// Reads TOML text; `origin` names it.
    pub(super) fn toml(&mut self, text: &str, origin: Origin) {
        match Toml::string(text).data() {
            Ok(mut profiles) => {
                let dict = profiles.remove(&Profile::Default).unwrap_or_default();
                self.flatten("", dict, &origin);
            }
            Err(error) => self.problems.push(Problem {
                key: String::new(),
                value: None,
                origin,
                problem: format!("not valid TOML: {}", error.kind),
            }),
        }
    }

    fn flatten(&mut self, prefix: &str, dict: Dict, origin: &Origin) {
        for (name, value) in dict {
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                Value::Dict(_, inner) if !inner.is_empty() => self.flatten(&key, inner, origin),
                value => self.settings.push(Setting {
                    shown: shown(&value),
                    key,
                    value,
                    origin: origin.clone(),
                }),
            }
        }
    }

    /// Reads the `SWITCHBOARD_*` variables among `vars`: `__` separates
    /// the levels of a key (`SWITCHBOARD_PRESENCE__OFFLINE_GRACE`).
    pub(super) fn env(&mut self, vars: &[(String, String)]) {
        for (name, raw) in vars {
            let Some(path) = name.strip_prefix("SWITCHBOARD_") else {
                continue;
            };
            if OTHER_VARIABLES.contains(&name.as_str()) {
                continue;
            }
            self.settings.push(Setting {
                key: path.to_ascii_lowercase().replace("__", "."),
                value: raw.parse().expect("parsing a Value is infallible"),
                shown: format!("{raw:?}"),
                origin: Origin::Env(name.clone()),
            });
        }
    }

    /// Reads the command-line flags that were given.
    pub(super) fn flags(&mut self, flags: &FlagOverrides) {
        let given = [
            ("listen", "--listen", flags.listen),
            ("admin_listen", "--admin-listen", flags.admin_listen),
        ];
        for (key, flag, addr) in given {
            if let Some(addr) = addr {
                self.settings.push(Setting {
                    key: key.into(),
                    value: Value::from(addr.to_string()),
                    shown: addr.to_string(),
                    origin: Origin::Flag(flag),
                });
            }
        }
    }

    /// The configuration, or every problem with it.
    pub(super) fn resolve(self) -> Result<Config, ConfigError> {
        let defaults = Figment::from(Serialized::defaults(Config::default()));
        let mut problems = self.problems;
        let mut good = Vec::with_capacity(self.settings.len());
        for setting in self.settings {
            let alone = defaults
                .clone()
                .merge(Serialized::global(&setting.key, &setting.value));
            match alone.extract::<Config>() {
                Ok(_) => good.push(setting),
                Err(error) => problems.push(explain(&setting, &error)),
            }
        }
        let merged = good.iter().fold(defaults, |figment, setting| {
            figment.merge(Serialized::global(&setting.key, &setting.value))
        });
        let config: Config = match merged.extract() {
            Ok(config) => config,
            Err(error) => {
                problems.push(Problem::invalid("", format!("{}", error.kind)));
                return Err(ConfigError { problems });
            }
        };
        for mut problem in config.validate() {
            // The last source that set the key, or a key inside the section.
            let set_it = good.iter().rev().find(|s| {
                s.key == problem.key
                    || s.key.starts_with(&format!("{}.", problem.key))
                    || problem.key.starts_with(&format!("{}.", s.key))
            });
            if let Some(setting) = set_it {
                problem.origin = setting.origin.clone();
            }
            problems.push(problem);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// A setting that failed on its own, in words: which key, what is wrong,
/// and what would be right.
fn explain(setting: &Setting, error: &figment::Error) -> Problem {
    use figment::error::Kind;
    let problem = match &error.kind {
        Kind::UnknownField(field, expected) => {
            let nearest = expected
                .iter()
                .max_by(|a, b| {
                    strsim::jaro_winkler(field, a).total_cmp(&strsim::jaro_winkler(field, b))
                })
                .filter(|near| strsim::jaro_winkler(field, near) > 0.8);
            // The path ends with the unknown key itself.
            let place = error.path[..error.path.len().saturating_sub(1)].join(".");
            let place = if place.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("in [{place}]")
            };
            match nearest {
                Some(near) => format!("no key `{field}` {place}; did you mean `{near}`?"),
                None => format!(
                    "no key `{field}` {place}; the keys there are {}",
                    expected
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!(
                "expected {expected}, found {actual}{}",
                example(&setting.key)
            )
        }
        kind => format!("{kind}{}", example(&setting.key)),
    };
    Problem {
        key: setting.key.clone(),
        value: Some(setting.shown.clone()),
        origin: setting.origin.clone(),
        problem,
    }
}

/// `; the default is X`, for a key that has a plain default value.
fn example(key: &str) -> String {
    let defaults = Value::serialize(Config::default()).expect("the defaults serialize");
    match defaults.find(key) {
        Some(value @ (Value::String(..) | Value::Num(..) | Value::Bool(..))) => {
            format!("; the default is {}", shown(&value))
        }
        _ => String::new(),
    }
}

/// A value as TOML would write it.
fn shown(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}
