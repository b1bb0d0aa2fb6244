//! Where a configuration comes from: a file, stdin (`--config -`), or the
//! environment, so a CI secret can hold the whole config
//! (`UNDERPASS_CONFIG`) or name a file (`UNDERPASS_CONFIG_FILE`).

use std::path::{Path, PathBuf};

use crate::config::{read_capped, LoadError, ProxyConfig};
use crate::Failure;

/// The configuration text itself.
pub const ENV_TEXT: &str = "UNDERPASS_CONFIG";
/// The path of the configuration file.
pub const ENV_FILE: &str = "UNDERPASS_CONFIG_FILE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Stdin,
    /// The text of [`ENV_TEXT`].
    Env(String),
}

impl ConfigSource {
    /// What `--config PATH` names: the file, or stdin for `-`.
    pub fn from_flag(path: &Path) -> ConfigSource {
        if path == Path::new("-") {
            ConfigSource::Stdin
        } else {
            ConfigSource::File(path.to_path_buf())
        }
    }

    /// `--config` when given (`-` is stdin); otherwise the environment.
    /// `Ok(None)`: no configuration anywhere.
    pub fn choose(
        arg: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ConfigSource>, String> {
        if let Some(path) = arg {
            return Ok(Some(ConfigSource::from_flag(path)));
        }
        match (env(ENV_TEXT), env(ENV_FILE)) {
            (Some(_), Some(_)) => Err(format!(
                "both {ENV_TEXT} and {ENV_FILE} are set; set one of them"
            )),
            (Some(text), None) if text.trim().is_empty() => Err(format!(
                "{ENV_TEXT} is set but empty (in CI: is the secret defined and passed to this step?)"
            )),
            (Some(text), None) => Ok(Some(ConfigSource::Env(text))),
            (None, Some(path)) if path.is_empty() => Err(format!("{ENV_FILE} is set but empty")),
            (None, Some(path)) => Ok(Some(ConfigSource::File(path.into()))),
            (None, None) => Ok(None),
        }
    }

    /// wireproxy's default files, in its order, for when nothing names a
    /// config: the first that exists.
    pub fn default_file(home: Option<&str>, exists: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
        let mut paths = vec![PathBuf::from("/etc/wireproxy/wireproxy.conf")];
        if let Some(home) = home.filter(|h| !h.is_empty()) {
            paths.push(Path::new(home).join(".config/wireproxy.conf"));
        }
        paths.into_iter().find(|p| exists(p))
    }

    /// Reads and parses; messages name the source (`<stdin>:3: ...`).
    pub fn load(&self) -> Result<ProxyConfig, LoadError> {
        let env = |name: &str| std::env::var(name).ok();
        match self {
            ConfigSource::File(path) => ProxyConfig::load(path),
            ConfigSource::Stdin => {
                let text = read_capped(std::io::stdin().lock()).map_err(|e| LoadError {
                    file: "<stdin>".into(),
                    line: 0,
                    key: None,
                    message: format!("cannot read: {e}"),
                })?;
                ProxyConfig::from_text(&text, "<stdin>", Path::new("."), &env)
            }
            ConfigSource::Env(text) => ProxyConfig::from_text(text, ENV_TEXT, Path::new("."), &env),
        }
    }

    /// The one way a config is loaded to be served: read, parsed, given
    /// the meaning `role` gives it (see `ProxyConfig::for_client` and
    /// `for_gateway`), its warnings logged.
    pub fn load_for(&self, role: ServedBy) -> Result<ProxyConfig, Failure> {
        let mut cfg = self.load().map_err(Failure::usage)?;
        match role {
            ServedBy::Client => cfg.for_client(),
            ServedBy::Gateway => cfg.for_gateway().map_err(Failure::usage)?,
        }
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        Ok(cfg)
    }
}

/// Who serves a config: the sections each reads differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedBy {
    Client,
    Gateway,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_flag_wins_and_dash_is_stdin() {
        let env = vars(&[(ENV_TEXT, "[Interface]")]);
        assert_eq!(
            ConfigSource::choose(Some(Path::new("-")), &env),
            Ok(Some(ConfigSource::Stdin))
        );
        assert_eq!(
            ConfigSource::choose(Some(Path::new("a.conf")), &env),
            Ok(Some(ConfigSource::File("a.conf".into())))
        );
    }

    #[test]
    fn the_environment_is_used_without_the_flag() {
        assert_eq!(
            ConfigSource::choose(None, &vars(&[(ENV_TEXT, "[Interface]")])),
            Ok(Some(ConfigSource::Env("[Interface]".into())))
        );
        assert_eq!(
            ConfigSource::choose(None, &vars(&[(ENV_FILE, "/etc/u.conf")])),
            Ok(Some(ConfigSource::File("/etc/u.conf".into())))
        );
        assert_eq!(ConfigSource::choose(None, &vars(&[])), Ok(None));
    }

    #[test]
    fn an_empty_secret_or_two_sources_are_errors() {
        let empty = ConfigSource::choose(None, &vars(&[(ENV_TEXT, " \n")])).unwrap_err();
        assert!(empty.contains("set but empty"), "{empty}");
        let both =
            ConfigSource::choose(None, &vars(&[(ENV_TEXT, "x"), (ENV_FILE, "y")])).unwrap_err();
        assert!(both.contains("both"), "{both}");
    }

    #[test]
    fn wireproxys_default_files_are_tried_in_its_order() {
        let etc = Path::new("/etc/wireproxy/wireproxy.conf");
        let home = Path::new("/home/u/.config/wireproxy.conf");
        let both = |p: &Path| p == etc || p == home;
        assert_eq!(
            ConfigSource::default_file(Some("/home/u"), &both).as_deref(),
            Some(etc)
        );
        let home_only = |p: &Path| p == home;
        assert_eq!(
            ConfigSource::default_file(Some("/home/u"), &home_only).as_deref(),
            Some(home)
        );
        assert_eq!(ConfigSource::default_file(None, &home_only), None);
        assert_eq!(
            ConfigSource::default_file(Some("/home/u"), &|_| false),
            None
        );
    }
}
