//! Parsing pieces shared by the attributes of all three macros: one slot per key that reports
//! duplicates, typed values that report the expected syntax, and unknown keys that list the
//! valid ones. Every error is pushed to the [`Ctxt`] and parsing goes on, so one pass finds them
//! all.

use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, Lit, LitInt, LitStr, Path, Token};

use crate::ctxt::Ctxt;
use crate::symbol::Symbol;

/// A value together with the key it was written under, for errors that point at the key.
pub struct Keyed<T> {
    pub key: Path,
    pub value: T,
}

/// The value of one key. A second occurrence is an error at it, with a second error at the first.
pub struct Slot<'c, T> {
    ctxt: &'c Ctxt,
    name: Symbol,
    /// The key as first written, whether or not its value was usable.
    first: Option<Path>,
    value: Option<T>,
}

impl<'c, T> Slot<'c, T> {
    pub fn new(ctxt: &'c Ctxt, name: Symbol) -> Self {
        Slot {
            ctxt,
            name,
            first: None,
            value: None,
        }
    }

    /// Records `key`; `value` is `None` when it was unusable (and already reported).
    pub fn set(&mut self, key: &Path, value: Option<T>) {
        match &self.first {
            Some(first) => {
                self.ctxt.error_spanned_by(
                    key,
                    format_args!("duplicate key `{}`: keep only one", self.name),
                );
                self.ctxt
                    .error_spanned_by(first, format_args!("`{}` first defined here", self.name));
            }
            None => {
                self.first = Some(key.clone());
                self.value = value;
            }
        }
    }

    /// Whether the key was written at all: a required key with a bad value is not also "missing".
    pub fn written(&self) -> bool {
        self.first.is_some()
    }

    pub fn get(self) -> Option<Keyed<T>> {
        let key = self.first?;
        self.value.map(|value| Keyed { key, value })
    }
}

/// Runs `parse` on every `#[namespace(...)]` among `attrs`. A malformed attribute is reported and
/// the remaining ones are still read.
pub fn parse_namespace<F>(ctxt: &Ctxt, attrs: &[Attribute], namespace: Symbol, mut parse: F)
where
    F: FnMut(&ParseNestedMeta) -> syn::Result<()>,
{
    for attr in attrs {
        if attr.path() != namespace {
            continue;
        }
        if let syn::Meta::Path(_) | syn::Meta::NameValue(_) = &attr.meta {
            ctxt.error_spanned_by(
                attr,
                format_args!("expected a list of keys: `#[{namespace}(...)]`"),
            );
            continue;
        }
        if let Err(error) = attr.parse_nested_meta(|meta| parse(&meta)) {
            ctxt.syn_error(error);
        }
    }
}

/// `key = "..."`: the string, or `None` after reporting what was expected.
pub fn string(ctxt: &Ctxt, meta: &ParseNestedMeta, example: &str) -> syn::Result<Option<LitStr>> {
    literal(ctxt, meta, "a string", example, |lit| match lit {
        Lit::Str(lit) => Some(lit),
        _ => None,
    })
}

/// `key = 1`: the integer, or `None` after reporting what was expected.
pub fn integer(ctxt: &Ctxt, meta: &ParseNestedMeta, example: &str) -> syn::Result<Option<LitInt>> {
    literal(ctxt, meta, "an integer", example, |lit| match lit {
        Lit::Int(lit) => Some(lit),
        _ => None,
    })
}

/// `key = <literal>`, with `accept` picking the literal kind the key takes.
fn literal<T>(
    ctxt: &Ctxt,
    meta: &ParseNestedMeta,
    kind: &str,
    example: &str,
    accept: impl FnOnce(Lit) -> Option<T>,
) -> syn::Result<Option<T>> {
    let key = key_name(&meta.path);
    if !meta.input.peek(Token![=]) {
        ctxt.error_spanned_by(
            &meta.path,
            format_args!("`{key}` takes {kind}: `{example}`"),
        );
        skip_value(meta)?;
        return Ok(None);
    }
    let value = meta.value()?.parse::<Expr>()?;
    let accepted = match &value {
        Expr::Lit(syn::ExprLit { lit, .. }) => accept(lit.clone()),
        _ => None,
    };
    if accepted.is_none() {
        ctxt.error_spanned_by(
            value,
            format_args!("`{key}` takes {kind} literal: `{example}`"),
        );
    }
    Ok(accepted)
}

/// A key that is a flag: anything after it is reported and skipped.
pub fn flag(ctxt: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<()> {
    if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        let key = key_name(&meta.path);
        ctxt.error_spanned_by(
            &meta.path,
            format_args!("`{key}` takes no value: write just `{key}`"),
        );
        skip_value(meta)?;
    }
    Ok(())
}

/// Reports an unknown key with the list of valid ones, and skips its value.
pub fn unknown_key(
    ctxt: &Ctxt,
    meta: &ParseNestedMeta,
    place: &str,
    valid: &[&str],
) -> syn::Result<()> {
    let key = key_name(&meta.path);
    ctxt.error_spanned_by(
        &meta.path,
        format_args!(
            "unknown key `{key}` {place}; the valid keys are {}",
            list(valid)
        ),
    );
    skip_value(meta)
}

/// Skips `= expr` or `(...)` after a key, so the keys after it are still read.
pub fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

/// `crate = "path"` in a derive attribute: the path, or `None` after reporting what was wrong.
pub fn crate_key(ctxt: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Path>> {
    let lit = string(ctxt, meta, "crate = \"my_outbox\"")?;
    Ok(lit.and_then(|lit| crate_path(ctxt, &lit)))
}

/// `crate = "path"`: the path through which generated code reaches the facade, for users who
/// renamed the `outbox` dependency.
pub fn crate_path(ctxt: &Ctxt, lit: &LitStr) -> Option<Path> {
    match lit.parse::<Path>() {
        Ok(path) => Some(path),
        Err(_) => {
            ctxt.error_spanned_by(
                lit,
                format_args!(
                    "`crate` takes a path to the outbox facade, such as `crate = \"my_outbox\"`"
                ),
            );
            None
        }
    }
}

/// `a`, `b` and `c`, with backticks: for the lists in error messages.
pub fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("`{item}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn key_name(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::list;

    #[test]
    fn lists_read_as_english() {
        assert_eq!(list(&["id"]), "`id`");
        assert_eq!(list(&["a", "b"]), "`a` and `b`");
        assert_eq!(list(&["a", "b", "c"]), "`a`, `b` and `c`");
    }
}
