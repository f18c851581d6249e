//! The words of the macros' attribute syntax, each spelled once.

use std::fmt::{self, Display};

use syn::{Ident, Path};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Symbol(&'static str);

// Attribute namespaces.
pub const DOMAIN_EVENT: Symbol = Symbol("domain_event");
pub const AGGREGATE_ROOT: Symbol = Symbol("aggregate_root");
pub const SERDE: Symbol = Symbol("serde");

// Keys shared by the derives.
pub const AGGREGATE: Symbol = Symbol("aggregate");
pub const CRATE: Symbol = Symbol("crate");

// #[domain_event(...)]
pub const AGGREGATE_ID: Symbol = Symbol("aggregate_id");
pub const EVENT_TYPE: Symbol = Symbol("event_type");
pub const VERSION: Symbol = Symbol("version");

// #[aggregate_root(...)]
pub const ID: Symbol = Symbol("id");
pub const CHILDREN: Symbol = Symbol("children");

// #[emits(...)]
pub const AUTOCOMMIT: Symbol = Symbol("autocommit");
pub const OUTBOX: Symbol = Symbol("outbox");
pub const TXN: Symbol = Symbol("txn");

// #[serde(...)] keys that change what the payload of an enum looks like.
pub const TAG: Symbol = Symbol("tag");
pub const UNTAGGED: Symbol = Symbol("untagged");

// Parameter types that #[emits] recognizes by their last path segment.
pub const DATABASE_TRANSACTION: Symbol = Symbol("DatabaseTransaction");
pub const DATABASE_CONNECTION: Symbol = Symbol("DatabaseConnection");
pub const DB_CONN: Symbol = Symbol("DbConn");
pub const CONNECTION_TRAIT: Symbol = Symbol("ConnectionTrait");
pub const TRANSACTION_TRAIT: Symbol = Symbol("TransactionTrait");
pub const EVENTS: Symbol = Symbol("Events");

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Ident {
    fn eq(&self, word: &Symbol) -> bool {
        *self == word.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(self.0)
    }
}
