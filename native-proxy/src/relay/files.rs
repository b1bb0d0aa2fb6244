//! `--web-root`: the demo's files, but never a dotfile or dot-directory
//! (`.git/`, `.env`: a checkout's secrets sit beside its pages) and never
//! a file reached through a symlink that leads out of the root.
//!
//! The check runs before tower-http's `ServeDir`, which serves whatever
//! the path names. Someone who can change the root between the check and
//! the open could swap a symlink in, but they can change the pages anyway.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::services::ServeDir;

use crate::Failure;

struct WebRoot {
    /// Canonical: symlinks resolved, so a resolved file must start with it.
    root: PathBuf,
}

/// The files under `root`, as a router to fall back to.
pub fn router(root: &Path) -> Result<Router, Failure> {
    let canonical = std::fs::canonicalize(root)
        .map_err(|e| Failure::usage(format!("--web-root {}: {e}", root.display())))?;
    if !canonical.is_dir() {
        return Err(Failure::usage(format!(
            "--web-root {}: not a directory",
            root.display()
        )));
    }
    if !canonical.join("index.html").is_file() {
        tracing::warn!("--web-root {}: no index.html there", root.display());
    }
    let state = Arc::new(WebRoot {
        root: canonical.clone(),
    });
    Ok(Router::new()
        .fallback_service(ServeDir::new(canonical))
        .layer(middleware::from_fn_with_state(state, guard)))
}

async fn guard(State(root): State<Arc<WebRoot>>, req: Request, next: Next) -> Response {
    if root.allows(req.uri().path()).await {
        next.run(req).await
    } else {
        tracing::debug!(path = %req.uri().path(), "web root: not served (a dotfile, outside the root, or missing)");
        StatusCode::NOT_FOUND.into_response()
    }
}

impl WebRoot {
    /// Whether the URL path names a file or directory inside the root,
    /// with no part of its name or of where it really is starting with a
    /// dot. Missing files are refused here too (a 404 either way).
    async fn allows(&self, path: &str) -> bool {
        let Some(decoded) = decode_path(path) else {
            return false;
        };
        if decoded
            .split('/')
            .any(|part| part.starts_with('.') || part.contains(['\\', '\0']))
        {
            return false;
        }
        let wanted = self.root.join(decoded.trim_start_matches('/'));
        let Ok(real) = tokio::fs::canonicalize(&wanted).await else {
            return false;
        };
        match real.strip_prefix(&self.root) {
            Ok(inside) => !inside.components().any(|c| match c {
                Component::Normal(name) => name.to_string_lossy().starts_with('.'),
                _ => true,
            }),
            Err(_) => false,
        }
    }
}

/// The URL path with `%XX` decoded, as `ServeDir` decodes it (`+` stays);
/// `None` when it is not UTF-8.
fn decode_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_as_serve_dir_does() {
        assert_eq!(
            decode_path("/%2egit/config").as_deref(),
            Some("/.git/config")
        );
        assert_eq!(decode_path("/a+b%20c").as_deref(), Some("/a+b c"));
        assert_eq!(decode_path("/%zz%4").as_deref(), Some("/%zz%4"));
        assert_eq!(decode_path("/%ff"), None);
    }

    #[tokio::test]
    async fn dotfiles_and_symlinks_out_of_the_root_are_not_served() {
        let dir = std::env::temp_dir().join(format!("underpass-webroot-{}", std::process::id()));
        let root = dir.join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("index.html"), "x").unwrap();
        std::fs::write(root.join("sub/page.html"), "x").unwrap();
        std::fs::write(root.join(".env"), "SECRET").unwrap();
        std::fs::write(root.join(".git/config"), "x").unwrap();
        std::fs::write(dir.join("outside.txt"), "x").unwrap();
        #[cfg(unix)]
        {
            let _ = std::os::unix::fs::symlink(dir.join("outside.txt"), root.join("leak"));
            let _ = std::os::unix::fs::symlink(root.join("index.html"), root.join("alias.html"));
            let _ = std::os::unix::fs::symlink(root.join(".env"), root.join("env.txt"));
        }
        let w = WebRoot {
            root: std::fs::canonicalize(&root).unwrap(),
        };
        for ok in ["/", "/index.html", "/sub/", "/sub/page.html", "/alias.html"] {
            assert!(w.allows(ok).await, "{ok} should be served");
        }
        for refused in [
            "/.env",
            "/.git/config",
            "/%2egit/config",
            "/sub/../.env",
            "/leak",
            "/env.txt",
            "/missing",
        ] {
            assert!(!w.allows(refused).await, "{refused} was served");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
