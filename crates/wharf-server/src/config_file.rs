//! Settings from a TOML file, between the environment and the defaults:
//! command line > `WHARF_*` environment > file > default.
//!
//! The file is `--config FILE` (`WHARF_CONFIG`), else the `[tool.wharf]` table of
//! `pyproject.toml` in the `--chdir` directory (else the current one), if it has one. Keys are
//! the long option names (`max-requests = 1000`, `bind = [":8000"]`, `app = "pkg.wsgi:app"`).
//!
//! A file value is turned back into command-line arguments and parsed by clap with everything
//! else, so a file is validated exactly like the command line. The supervisor passes the
//! resulting arguments plus `--no-config` to its workers: they never read the file themselves,
//! so every worker runs the settings the supervisor started with, even if the file changes.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::config::Config;
use crate::gunicorn;

/// Arguments about finding and reporting settings, which are not settings themselves.
const NOT_SETTINGS: &[&str] = &["config", "no_config", "print_config", "check_config", "help", "version"];

/// Why the settings could not be loaded.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// A command-line or environment problem, formatted by clap (`--help` and `--version` too).
    Clap(clap::Error),
    /// Anything else: one line naming the option, key or file at fault.
    Invalid(String),
}

impl LoadError {
    /// Prints the error and returns the exit code: 0 for --help/--version, otherwise 2.
    pub(crate) fn report(self) -> i32 {
        match self {
            LoadError::Clap(err) => {
                let code = if err.use_stderr() { 2 } else { 0 };
                // clap formats usage errors and --help itself; a failed print has nowhere to go.
                err.print().ok();
                code
            }
            LoadError::Invalid(message) => {
                eprintln!("wharf: error: {message}");
                2
            }
        }
    }
}

/// Where an effective setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    CommandLine,
    Environment(String),
    File(String),
    Default,
}

/// The effective settings.
pub(crate) struct Loaded {
    pub(crate) config: Config,
    /// The arguments that reproduce `config` without reading any file (for the workers).
    pub(crate) args: Vec<String>,
    matches: ArgMatches,
    from_file: HashMap<String, String>,
}

/// Parses `argv` (program name first) and the config file it points to.
pub(crate) fn load(argv: &[String]) -> Result<Loaded, LoadError> {
    let command = Config::command();
    let matches = command.clone().try_get_matches_from(argv).map_err(explain_unknown)?;
    let user_args: Vec<String> = argv.iter().skip(1).cloned().collect();
    let (file_args, from_file) = match find_file(&matches)? {
        Some(file) => file_arguments(&command, &matches, &file)?,
        None => (Vec::new(), HashMap::new()),
    };
    let no_config = (!matches.get_flag("no_config")).then(|| "--no-config".to_owned());
    let args: Vec<String> = no_config.into_iter().chain(file_args).chain(user_args).collect();
    let program = argv.first().cloned().unwrap_or_else(|| "wharf".into());
    let matches =
        command.try_get_matches_from(std::iter::once(program).chain(args.iter().cloned())).map_err(LoadError::Clap)?;
    let config = Config::from_arg_matches(&matches).map_err(LoadError::Clap)?;
    if config.app.is_empty() && !config.print_config {
        return Err(LoadError::Invalid(
            "no application given: pass APP (module:attribute, e.g. myproject.wsgi:application), \
             set WHARF_APP, or set `app` in the config file"
                .into(),
        ));
    }
    Ok(Loaded { config, args, matches, from_file })
}

/// clap answers an unknown option with the nearest spelling, which for gunicorn's options is
/// the wrong advice (`--preload` -> `--reload`).
fn explain_unknown(err: clap::Error) -> LoadError {
    if err.kind() == clap::error::ErrorKind::UnknownArgument
        && let Some(clap::error::ContextValue::String(flag)) = err.get(clap::error::ContextKind::InvalidArg)
        && let Some(why) = gunicorn::habit(flag)
    {
        return LoadError::Invalid(format!("wharf has no {flag}: {why} (see docs/migrating-from-gunicorn.md)"));
    }
    LoadError::Clap(err)
}

/// A settings table and the name to blame for it.
struct SettingsFile {
    table: toml::Table,
    name: String,
}

fn find_file(matches: &ArgMatches) -> Result<Option<SettingsFile>, LoadError> {
    if matches.get_flag("no_config") {
        return Ok(None);
    }
    if let Some(path) = matches.get_one::<PathBuf>("config") {
        let table = read_toml(path)?;
        return Ok(Some(SettingsFile { table, name: path.display().to_string() }));
    }
    let dir = matches.get_one::<PathBuf>("chdir").map_or(Path::new("."), PathBuf::as_path);
    let path = dir.join("pyproject.toml");
    if !path.is_file() {
        return Ok(None);
    }
    let mut table = read_toml(&path)?;
    let wharf = table.remove("tool").and_then(|tool| match tool {
        toml::Value::Table(mut tool) => tool.remove("wharf"),
        _ => None,
    });
    match wharf {
        None => Ok(None),
        Some(toml::Value::Table(table)) => {
            Ok(Some(SettingsFile { table, name: format!("{} [tool.wharf]", path.display()) }))
        }
        Some(_) => Err(LoadError::Invalid(format!("{}: `tool.wharf` must be a table", path.display()))),
    }
}

fn read_toml(path: &Path) -> Result<toml::Table, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| LoadError::Invalid(format!("cannot read config file {}: {err}", path.display())))?;
    text.parse::<toml::Table>().map_err(|err| {
        let hint = if path.extension().is_some_and(|ext| ext == "py") {
            " (wharf config files are TOML, not Python like gunicorn's; see docs/migrating-from-gunicorn.md)"
        } else {
            ""
        };
        LoadError::Invalid(format!("config file {} is not valid TOML{hint}: {}", path.display(), err.message()))
    })
}

/// The file's settings as arguments, for every key not already set on the command line or in
/// the environment, and which settings they are.
fn file_arguments(
    command: &clap::Command,
    matches: &ArgMatches,
    file: &SettingsFile,
) -> Result<(Vec<String>, HashMap<String, String>), LoadError> {
    let mut args = Vec::new();
    let mut from_file = HashMap::new();
    for (key, value) in &file.table {
        let arg = setting(command, key).ok_or_else(|| unknown_key(command, key, &file.name))?;
        let id = arg.get_id().as_str();
        if matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let these = arguments(arg, value)
            .map_err(|expected| LoadError::Invalid(format!("{}: `{key}` must be {expected}", file.name)))?;
        // Validated alone, so that an error names the key and the file, not an option the
        // user never typed.
        let alone = std::iter::once("wharf".to_owned()).chain(these.iter().cloned());
        if let Err(err) = command.clone().try_get_matches_from(alone) {
            return Err(LoadError::Invalid(format!("{}: `{key}`: {}", file.name, clap_message(&err))));
        }
        args.extend(these);
        from_file.insert(id.to_owned(), file.name.clone());
    }
    Ok((args, from_file))
}

/// The argument a file key names: `app`, or an option by its long name.
fn setting<'c>(command: &'c clap::Command, key: &str) -> Option<&'c Arg> {
    command.get_arguments().find(|arg| {
        !NOT_SETTINGS.contains(&arg.get_id().as_str())
            && (arg.get_long() == Some(key) || (arg.is_positional() && arg.get_id().as_str() == key))
    })
}

fn unknown_key(command: &clap::Command, key: &str, file: &str) -> LoadError {
    let dashed = key.replace('_', "-");
    let hint = if dashed != key && setting(command, &dashed).is_some() {
        format!("; did you mean `{dashed}`? (keys are the long option names)")
    } else if let Some(why) = gunicorn::habit(&format!("--{dashed}")) {
        format!(": {why}")
    } else {
        let mut known: Vec<&str> = command
            .get_arguments()
            .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()))
            .filter_map(|arg| if arg.is_positional() { Some(arg.get_id().as_str()) } else { arg.get_long() })
            .collect();
        known.sort_unstable();
        format!("; known keys: {}", known.join(", "))
    };
    LoadError::Invalid(format!("{file}: unknown key `{key}`{hint}"))
}

/// `value` as command-line arguments for `arg`; `Err` says what was expected.
fn arguments(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, &'static str> {
    let long = arg.get_long().map(|long| format!("--{long}"));
    let option = |text: String| match &long {
        Some(long) => format!("{long}={text}"),
        None => text,
    };
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(long.into_iter().collect()),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => Err("true or false"),
        (ArgAction::Append, toml::Value::Array(items)) => {
            items.iter().map(|item| scalar(item).map(&option).ok_or("a list of strings")).collect()
        }
        (_, value) => scalar(value).map(|text| vec![option(text)]).ok_or("a string or a number"),
    }
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

impl Loaded {
    /// Where the setting with clap id `id` came from; `None` if it is unset.
    pub(crate) fn source(&self, id: &str) -> Option<Source> {
        if let Some(file) = self.from_file.get(id) {
            return Some(Source::File(file.clone()));
        }
        match self.matches.value_source(id)? {
            ValueSource::CommandLine => Some(Source::CommandLine),
            ValueSource::EnvVariable => {
                let env = Config::command()
                    .get_arguments()
                    .find(|arg| arg.get_id().as_str() == id)
                    .and_then(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                Some(Source::Environment(env))
            }
            _ => Some(Source::Default),
        }
    }

    /// The effective settings as a TOML document usable as a config file, each line with a
    /// comment saying where the value came from.
    pub(crate) fn describe(&self) -> String {
        let mut out = String::from("# effective wharf settings (command line > environment > file > default)\n");
        let command = Config::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_SETTINGS.contains(&id) {
                continue;
            }
            let key = arg.get_long().unwrap_or(id);
            let raw: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|values| values.map(|v: &std::ffi::OsStr| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let source = match self.source(id) {
                Some(Source::CommandLine) => "command line".to_owned(),
                Some(Source::Environment(env)) => format!("environment {env}"),
                Some(Source::File(file)) => file,
                Some(Source::Default) | None => "default".to_owned(),
            };
            let value = match arg.get_action() {
                ArgAction::SetTrue => Some(toml::Value::Boolean(raw.first().is_some_and(|v| v == "true"))),
                ArgAction::Append => Some(toml::Value::Array(raw.iter().map(|v| typed(v)).collect())),
                _ if id == "app" && raw.first().is_none_or(String::is_empty) => None,
                _ => raw.first().map(|v| typed(v)),
            };
            // Writing to a String cannot fail.
            let _ = match value {
                Some(value) => writeln!(out, "{key} = {value}  # {source}"),
                None => writeln!(out, "# {key}: not set"),
            };
        }
        out
    }
}

/// A value as TOML: numbers stay numbers, so the output reads like a hand-written file (either
/// form is accepted back).
fn typed(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() && raw.contains('.') => toml::Value::Float(f),
        _ => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        std::iter::once("wharf").chain(args.iter().copied()).map(String::from).collect()
    }

    fn config_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("wharf-config-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        path
    }

    #[test]
    fn file_fills_what_the_command_line_leaves_and_workers_get_no_file() {
        let path = config_file(
            "fills",
            "app = \"pkg.wsgi:app\"\nthreads = 3\nworkers = 5\nreload = true\nbind = [\":9000\", \"127.0.0.1:9001\"]\n",
        );
        let path_arg = path.to_string_lossy().into_owned();
        let loaded = load(&argv(&["--config", &path_arg, "--workers", "2"])).expect("loads");
        assert_eq!(loaded.config.app, "pkg.wsgi:app");
        assert_eq!((loaded.config.threads, loaded.config.workers), (3, 2));
        assert!(loaded.config.reload);
        assert_eq!(loaded.config.binds.len(), 2);
        assert_eq!(loaded.source("threads"), Some(Source::File(path_arg.clone())));
        assert_eq!(loaded.source("workers"), Some(Source::CommandLine));
        assert_eq!(loaded.source("backlog"), Some(Source::Default));
        assert_eq!(loaded.args.first().map(String::as_str), Some("--no-config"));
        // The worker's arguments reproduce the settings without the file.
        std::fs::remove_file(&path).expect("remove temp file");
        let again =
            load(&std::iter::once("wharf".to_owned()).chain(loaded.args.clone()).collect::<Vec<_>>()).expect("loads");
        assert_eq!((again.config.threads, again.config.workers, again.config.app.as_str()), (3, 2, "pkg.wsgi:app"));
    }

    #[test]
    fn values_become_arguments_by_kind() {
        let command = Config::command();
        let arg = |key| setting(&command, key).expect("known key");
        assert_eq!(arguments(arg("threads"), &toml::Value::Integer(4)), Ok(vec!["--threads=4".to_owned()]));
        assert_eq!(arguments(arg("timeout"), &toml::Value::Float(2.5)), Ok(vec!["--timeout=2.5".to_owned()]));
        assert_eq!(arguments(arg("access-log"), &toml::Value::Boolean(false)), Ok(vec![]));
        assert_eq!(arguments(arg("access-log"), &toml::Value::String("yes".into())), Err("true or false"));
        assert_eq!(arguments(arg("app"), &toml::Value::String("m:a".into())), Ok(vec!["m:a".to_owned()]));
        assert!(setting(&command, "print-config").is_none() && setting(&command, "config").is_none());
        assert_eq!(typed("8"), toml::Value::Integer(8));
        assert_eq!(typed("0.5"), toml::Value::Float(0.5));
        assert_eq!(typed("127.0.0.1:8000"), toml::Value::String("127.0.0.1:8000".into()));
    }

    #[test]
    fn gunicorn_flags_are_explained() {
        match load(&argv(&["--preload", "app"])) {
            Err(LoadError::Invalid(message)) => assert!(message.starts_with("wharf has no --preload: "), "{message}"),
            other => panic!("expected an explanation, got {:?}", other.err()),
        }
        assert!(matches!(load(&argv(&["--no-such", "app"])), Err(LoadError::Clap(_))));
    }
}
