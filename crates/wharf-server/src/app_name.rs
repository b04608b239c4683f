//! The one rule for naming the WSGI application: `module:attribute`, both dotted Python
//! identifiers (ASCII), e.g. `myproject.wsgi:application`.
//!
//! The server's command line and the operator's CRD (its CEL rule and its own check) use this
//! file: the operator compiles it in with `#[path]`, so it depends on nothing but `core`.

/// The rule as a regular expression, for the CRD's CEL `matches()` (RE2 syntax).
#[allow(dead_code, reason = "used by the operator's CEL rule; the server checks with `split`")]
pub const PATTERN: &str =
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$";

/// `module:attribute` split in two, or `None` when `app` does not match [`PATTERN`].
pub fn split(app: &str) -> Option<(&str, &str)> {
    let (module, attribute) = app.split_once(':')?;
    (dotted_name(module) && dotted_name(attribute)).then_some((module, attribute))
}

/// Identifiers (`[A-Za-z_][A-Za-z0-9_]*`) joined by dots.
fn dotted_name(name: &str) -> bool {
    name.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_identifiers_on_both_sides() {
        for ok in ["app:app", "my_pkg.wsgi:application", "a.b.c:factory.attr", "_m:_a", "M2:x9"] {
            assert_eq!(split(ok).map(|(m, a)| format!("{m}:{a}")).as_deref(), Some(ok), "{ok}");
        }
        for bad in ["app", ":app", "app:", "1mod:app", "mod:app()", "mod::app", "mod:a-b", "mod.:app", "", "mód:app"] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
    }
}
