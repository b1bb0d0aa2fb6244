//! The text a config is parsed from: the file read (with a size cap), the
//! wg-quick file `WGConfig =` imports, `$NAME` values from the
//! environment, each line remembering the file and line it came from, and
//! a warning when a file holding a key can be read by others.

use std::path::{Path, PathBuf};

use underpass_core::config::{ini_quoted, lex_line, numbered_lines, ConfigErrorKind, Line};

use super::{wireproxy, LoadError};

/// The text to parse, with the origin of every line.
pub(super) struct Source {
    pub(super) text: String,
    pub(super) origins: Vec<(PathBuf, usize)>,
    /// See [`ProxyConfig::secret_vars`].
    pub(super) secret_vars: Vec<String>,
    /// Files read (imports) that hold a key themselves and that others
    /// may read.
    pub(super) exposed: Vec<String>,
}

impl Source {
    pub(super) fn origin(&self, line: usize) -> (PathBuf, usize) {
        match line.checked_sub(1).and_then(|i| self.origins.get(i)) {
            Some((file, l)) => (file.clone(), *l),
            None => (
                self.origins
                    .first()
                    .map(|o| o.0.clone())
                    .unwrap_or_default(),
                0,
            ),
        }
    }

    pub(super) fn error(
        &self,
        line: usize,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> LoadError {
        let (file, line) = self.origin(line);
        LoadError {
            file,
            line,
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

pub(super) fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variable a value names, if it is exactly `$NAME` or `${NAME}`.
pub(super) fn var_name(value: &str) -> Option<&str> {
    let name = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'))?;
    is_var_name(name).then_some(name)
}

/// Keys whose values are secrets.
const SECRET_KEYS: [&str; 3] = ["PrivateKey", "PresharedKey", "Password"];

/// `(key, value)` of a line that sets one of `keys`.
pub(super) fn setting<'a>(line: &'a str, keys: &[&str]) -> Option<(&'a str, String)> {
    match lex_line(line) {
        Ok(Line::Setting { key, value, .. })
            if keys.iter().any(|k| k.eq_ignore_ascii_case(key)) =>
        {
            Some((key, value))
        }
        _ => None,
    }
}

/// Whether the text itself holds a WireGuard key (not a `$VAR` naming
/// one).
pub(super) fn holds_key(text: &str) -> bool {
    text.lines()
        .filter_map(|l| setting(l, &["PrivateKey", "PresharedKey"]))
        .any(|(_, value)| !value.is_empty() && var_name(&value).is_none())
}

/// A warning when `path` holds a key and its group or others may read it
/// (as wg-quick warns), with the command that fixes it.
pub fn exposure_warning(path: &Path, text: &str) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0 && holds_key(text)).then(|| {
            format!(
                "{}: holds a private key and is readable by group or others (mode {mode:04o}); run: chmod 600 {}",
                path.display(),
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (path, text);
        None
    }
}

/// Applies `$VAR` to one line of `file`; the line itself otherwise.
pub(super) fn expand_line(
    line: &str,
    file: &Path,
    number: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, LoadError> {
    let Ok(Line::Setting { key, value, .. }) = lex_line(line) else {
        return Ok(line.to_string());
    };
    if let Some(literal) = wireproxy::dollar_literal(&value) {
        return Ok(format!("{} = {}", key.trim(), ini_quoted(&literal)));
    }
    let Some(name) = var_name(&value) else {
        return Ok(line.to_string());
    };
    match env(name) {
        Some(v) if !v.contains('\n') => Ok(format!("{} = {}", key.trim(), ini_quoted(v.trim()))),
        Some(_) => Err(LoadError {
            file: file.to_path_buf(),
            line: number,
            key: Some(key.trim().to_string()),
            message: format!(
                "environment variable {name} holds several lines; a value is one line"
            ),
        }),
        None => Err(LoadError {
            file: file.to_path_buf(),
            line: number,
            key: Some(key.trim().to_string()),
            message: format!("environment variable {name} is not set"),
        }),
    }
}

/// Larger than any real config; a path to /dev/zero must not eat memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

pub(super) fn read(path: &Path) -> Result<String, std::io::Error> {
    read_capped(std::fs::File::open(path)?)
}

/// Reads a whole configuration, refusing more than [`MAX_CONFIG_BYTES`]
/// (`/dev/zero` given as a config must not read forever).
pub fn read_capped(from: impl std::io::Read) -> Result<String, std::io::Error> {
    use std::io::Read;
    let mut bytes = Vec::new();
    from.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than 1 MiB: not a config file",
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Builds the combined text: the file's lines, with a top-level
/// `WGConfig = path` replaced by that file's lines.
pub(super) fn assemble(
    text: &str,
    name: &Path,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, LoadError> {
    let mut source = Source {
        text: String::new(),
        origins: Vec::new(),
        secret_vars: Vec::new(),
        exposed: Vec::new(),
    };
    let push = |source: &mut Source, raw: &str, line: String, file: &Path, number: usize| {
        let secret = setting(raw, &SECRET_KEYS);
        if let Some(name) = secret.as_ref().and_then(|(_, value)| var_name(value)) {
            if !source.secret_vars.iter().any(|v| v == name) {
                source.secret_vars.push(name.to_string());
            }
        }
        source.text.push_str(&line);
        source.text.push('\n');
        source.origins.push((file.to_path_buf(), number));
    };
    let mut in_section = false;
    for (number, line) in numbered_lines(text) {
        let lexed = lex_line(line);
        if matches!(
            lexed,
            Ok(Line::Header(_)) | Err(ConfigErrorKind::MalformedHeader(_))
        ) {
            in_section = true;
        }
        if !in_section {
            if let Ok(Line::Setting { key, .. }) = lexed {
                if key.eq_ignore_ascii_case("WGConfig") {
                    let expanded = expand_line(line, name, number, env)?;
                    let value = setting(&expanded, &["WGConfig"]).map_or(String::new(), |s| s.1);
                    let path = base_dir.join(value);
                    let imported = read(&path).map_err(|e| LoadError {
                        file: name.to_path_buf(),
                        line: number,
                        key: Some("WGConfig".into()),
                        message: format!("cannot read {}: {e}", path.display()),
                    })?;
                    source.exposed.extend(exposure_warning(&path, &imported));
                    for (j, l) in numbered_lines(&imported) {
                        let expanded = expand_line(l, &path, j, env)?;
                        push(&mut source, l, expanded, &path, j);
                    }
                    continue;
                }
            }
        }
        let expanded = expand_line(line, name, number, env)?;
        push(&mut source, line, expanded, name, number);
    }
    Ok(source)
}
