//! The arguments of `#[emits(...)]`: the declared event types, then the keys.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, Lit, Path, Token, Type};

use crate::attr::{self, Slot};
use crate::ctxt::Ctxt;
use crate::symbol::*;

pub struct Args {
    /// The declared event types, in order, duplicates included (`valid` reports them).
    pub events: Vec<Type>,
    /// The `autocommit` key, when present.
    pub autocommit: Option<Ident>,
    pub outbox: Option<Expr>,
    /// `txn = name`: the parameter that is the transaction.
    pub txn: Option<Ident>,
    pub krate: Option<Path>,
}

const KEYS: &[&str] = &[
    "autocommit",
    "outbox = <expr>",
    "txn = <parameter>",
    "crate = \"path\"",
];

impl Args {
    /// Parses what it can; every problem goes to `ctxt`.
    pub fn parse(ctxt: &Ctxt, args: TokenStream) -> Self {
        let mut events = Vec::new();
        let mut autocommit = Slot::new(ctxt, AUTOCOMMIT);
        let mut outbox = Slot::new(ctxt, OUTBOX);
        let mut txn = Slot::new(ctxt, TXN);
        let mut krate = Slot::new(ctxt, CRATE);

        let parser = |input: ParseStream| -> syn::Result<()> {
            while !input.is_empty() {
                if input.peek(Ident::peek_any) && input.peek2(Token![=]) {
                    let key = Ident::parse_any(input)?;
                    let path = Path::from(key.clone());
                    input.parse::<Token![=]>()?;
                    if key == OUTBOX {
                        // #[emits(..., outbox = &ORDERS_OUTBOX)]
                        outbox.set(&path, Some(input.parse::<Expr>()?));
                    } else if key == TXN {
                        // #[emits(..., txn = conn)]
                        txn.set(&path, Some(input.parse::<Ident>()?));
                    } else if key == CRATE {
                        // #[emits(..., crate = "my_outbox")]
                        krate.set(&path, crate_value(ctxt, input)?);
                    } else {
                        input.parse::<Expr>()?;
                        unknown_key(ctxt, &key);
                    }
                } else if let Some(key) = bare_word(input) {
                    input.parse::<Ident>()?;
                    if key == AUTOCOMMIT {
                        // #[emits(..., autocommit)]
                        autocommit.set(&Path::from(key.clone()), Some(key));
                    } else {
                        unknown_key(ctxt, &key);
                    }
                } else {
                    // #[emits(OrderPlaced, OrderEvent, ...)]
                    events.push(input.parse::<Type>()?);
                }
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        if let Err(error) = parser.parse2(args) {
            ctxt.syn_error(error);
        }

        Args {
            events,
            autocommit: autocommit.get().map(|keyed| keyed.value),
            outbox: outbox.get().map(|keyed| keyed.value),
            txn: txn.get().map(|keyed| keyed.value),
            krate: krate.get().map(|keyed| keyed.value),
        }
    }
}

fn unknown_key(ctxt: &Ctxt, key: &Ident) {
    ctxt.error_spanned_by(
        key,
        format_args!(
            "unknown key `{key}` in #[emits(...)]; after the event types (written in CamelCase), the valid keys are {}",
            attr::list(KEYS)
        ),
    );
}

/// The next argument, if it is one lowercase word: a key, since event types are CamelCase.
fn bare_word(input: ParseStream) -> Option<Ident> {
    let fork = input.fork();
    let ident = fork.parse::<Ident>().ok()?;
    let lowercase = ident
        .to_string()
        .starts_with(|c: char| c.is_ascii_lowercase());
    (lowercase && (fork.is_empty() || fork.peek(Token![,]))).then_some(ident)
}

fn crate_value(ctxt: &Ctxt, input: ParseStream) -> syn::Result<Option<Path>> {
    match input.parse::<Expr>()? {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(attr::crate_path(ctxt, &lit)),
        other => {
            ctxt.error_spanned_by(
                &other,
                "`crate` takes a string literal: `crate = \"my_outbox\"`",
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use super::Args;
    use crate::ctxt::Ctxt;

    fn parse(tokens: proc_macro2::TokenStream) -> (Args, Result<(), String>) {
        let ctxt = Ctxt::new();
        let args = Args::parse(&ctxt, tokens);
        (args, ctxt.check().map_err(|e| e.to_string()))
    }

    #[test]
    fn types_then_keys() {
        let (args, errors) = parse(quote!(
            OrderPlaced,
            events::OrderEvent<'static>,
            autocommit,
            outbox = &OUTBOX,
            txn = conn,
            crate = "my_outbox"
        ));
        assert_eq!(errors, Ok(()));
        let events: Vec<String> = args
            .events
            .iter()
            .map(|ty| ty.to_token_stream().to_string())
            .collect();
        assert_eq!(events, ["OrderPlaced", "events :: OrderEvent < 'static >"]);
        assert!(args.autocommit.is_some());
        assert_eq!(args.outbox.to_token_stream().to_string(), "& OUTBOX");
        assert_eq!(args.txn.unwrap(), "conn");
        assert_eq!(args.krate.to_token_stream().to_string(), "my_outbox");
    }

    #[test]
    fn reports_unknown_and_duplicate_keys_in_one_pass() {
        let (_, errors) = parse(quote!(A, autocommit, colour = 1, autocommit));
        let errors = errors.unwrap_err();
        assert!(errors.contains("unknown key `colour`"), "{errors}");
        let (_, errors) = parse(quote!(A, autocomit));
        assert!(errors.unwrap_err().contains("unknown key `autocomit`"));
        let (_, errors) = parse(quote!(A, txn = a, txn = b));
        assert!(errors.unwrap_err().contains("duplicate key `txn`"));
    }

    #[test]
    fn a_type_named_like_a_key_is_still_a_type() {
        let (args, errors) = parse(quote!(autocommit::Event));
        assert_eq!(errors, Ok(()));
        assert_eq!(args.events.len(), 1);
        assert!(args.autocommit.is_none());
    }
}
