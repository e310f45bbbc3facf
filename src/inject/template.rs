//! File templates, in minijinja (Jinja2's syntax): a maintained, sandboxed engine rather than a
//! template language of our own.
//!
//! A template sees one variable, `secrets`, mapping each of its job's mapping names to the
//! resolved value: `password={{ secrets.DB_PASSWORD }}`, or `{{ secrets["db-password"] }}` for
//! names that are not identifiers. The environment is strict: an undefined name is an error,
//! not an empty string, so a typo never renders a file with a blank password. Nothing is
//! escaped (these are configuration files, not HTML), the template's trailing newline is kept,
//! and the engine has no loader: a template cannot read other files.
//!
//! Templates are compiled when the configuration is read, so a template that does not compile
//! is a configuration error naming its job, before anything is fetched or written. minijinja's
//! rendering builds the output in ordinary strings (not wiped); the rendered file is moved
//! into a wiped buffer at once.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use zeroize::Zeroizing;

use super::resolve::Resolved;
use super::value::SecretBytes;

/// The name the single template of an environment is stored under.
const NAME: &str = "template";

/// A compiled template.
pub struct Template {
    env: Environment<'static>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").finish_non_exhaustive()
    }
}

/// A template that does not compile, or failed to render. The message is minijinja's (it
/// names the line and the construct, never a secret value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

impl Template {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`TemplateError`] with the position and the reason.
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| TemplateError(e.to_string()))?;
        env.set_syntax(syntax);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| TemplateError(describe(&e)))?;
        Ok(Self { env })
    }

    /// Renders with `values` as `secrets`.
    ///
    /// # Errors
    /// [`TemplateError`]: an undefined name, a value that is not text, a failing filter.
    pub fn render(&self, values: &[Resolved]) -> Result<SecretBytes, TemplateError> {
        let mut secrets = BTreeMap::new();
        for resolved in values {
            let text = resolved.value.as_str().ok_or_else(|| {
                TemplateError(format!(
                    "the value of {} is not UTF-8 text; give it a base64-encode transform",
                    resolved.name
                ))
            })?;
            secrets.insert(resolved.name.clone(), Value::from(text));
        }
        let mut context = BTreeMap::new();
        context.insert("secrets".to_owned(), Value::from(secrets));
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| TemplateError(describe(&e)))?;
        let rendered = Zeroizing::new(
            template
                .render(Value::from(context))
                .map_err(|e| TemplateError(describe(&e)))?,
        );
        Ok(SecretBytes::from(rendered))
    }
}

/// minijinja's error with its line, without the debug dump of the context (which would hold
/// values; the `debug` feature that produces it is off, and only the plain parts are used).
fn describe(error: &minijinja::Error) -> String {
    let mut text = error.kind().to_string();
    if let Some(detail) = error.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(line) = error.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::reference::{Source, Store};

    fn resolved(name: &str, value: &[u8]) -> Resolved {
        Resolved {
            name: name.into(),
            value: SecretBytes::new(value.to_vec()),
            version: "1".into(),
            source: Source {
                store: Store::Kv,
                path: "secret/x".into(),
                version: None,
                stage: None,
            },
        }
    }

    #[test]
    fn renders_secrets_strictly_and_keeps_the_newline() {
        let t = Template::compile("user={{ secrets.U }}\npw={{ secrets[\"p-w\"] }}\n").unwrap();
        let out = t
            .render(&[resolved("U", b"app"), resolved("p-w", b"<&>")])
            .unwrap();
        assert_eq!(out.expose_secret(), b"user=app\npw=<&>\n");
        let err = t.render(&[resolved("U", b"app")]).unwrap_err().to_string();
        assert!(err.contains("undefined"), "{err}");
        let err = t
            .render(&[resolved("U", b"\xff"), resolved("p-w", b"x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn compile_errors_name_the_line() {
        let err = Template::compile("ok\n{% if %}\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(Template::compile("{{ secrets.A ").is_err());
    }

    #[test]
    fn render_errors_do_not_dump_values() {
        let t = Template::compile("{{ secrets.A | nosuchfilter }}").err();
        // Unknown filters fail at compile or render time depending on the engine; either way
        // the message must not carry the value.
        let message = match t {
            Some(err) => err.to_string(),
            None => Template::compile("{{ secrets.A | nosuchfilter }}")
                .unwrap()
                .render(&[resolved("A", b"topsecret")])
                .unwrap_err()
                .to_string(),
        };
        assert!(!message.contains("topsecret"), "{message}");
    }
}
