//! Who is asking: what every workspace operation takes, resolved from a
//! credential by [`crate::state::State::caller`] or [`crate::state::State::caller_for`].
//!
//! A signed-in user may call every route (roles decide the rest). A
//! workspace API key or a widget visitor acts for a user (the key's
//! creator, the widget's owner) inside one workspace only, and only on
//! the routes its [`Grant`] permits: a route states its [`Use`] to accept
//! them at all, so a new route refuses them until it says otherwise.

use crate::ids::{UserId, WorkspaceId};

/// What every workspace API key starts with, so a bearer value is
/// recognised as a key.
pub const API_KEY_PREFIX: &str = "rwk_";
/// What every widget embed token starts with.
pub const EMBED_TOKEN_PREFIX: &str = "rwe_";

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    /// None for a signed-in user.
    pub grant: Option<Grant>,
}

impl Caller {
    /// A signed-in user, unrestricted.
    pub fn member(user_id: UserId) -> Self {
        Self {
            user_id,
            grant: None,
        }
    }

    /// The one workspace a key or visitor is bound to.
    pub fn bound_workspace(&self) -> Option<WorkspaceId> {
        self.grant.map(|grant| match grant {
            Grant::Key { workspace, .. } | Grant::Visitor { workspace, .. } => workspace,
        })
    }

    /// Whether this caller may do `what`.
    pub fn permits(&self, what: Use) -> bool {
        match self.grant {
            None => true,
            Some(Grant::Key { scopes, .. }) => scopes.allow(what),
            Some(Grant::Visitor { .. }) => what == Use::Chat,
        }
    }
}

/// A restricted credential's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A workspace API key.
    Key {
        key_id: uuid::Uuid,
        workspace: WorkspaceId,
        scopes: Scopes,
    },
    /// A visitor of an embedded chat widget, holding an embed token.
    Visitor {
        widget_id: uuid::Uuid,
        workspace: WorkspaceId,
        /// Separates visitors' chat sessions from each other and from members'.
        visitor: uuid::Uuid,
    },
}

/// What a route does, as far as keys and visitors are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Ask questions: query, and the study tools.
    Query,
    /// Chat (the one thing a widget visitor may do).
    Chat,
    DocumentsRead,
    DocumentsWrite,
    /// The workspace's settings, members, usage and audit log.
    Admin,
}

/// An API key's scopes, as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const QUERY: Self = Self(1);
    pub const DOCUMENTS_READ: Self = Self(2);
    pub const DOCUMENTS_WRITE: Self = Self(4);
    pub const ADMIN: Self = Self(8);
    const NAMES: [(&'static str, Self); 4] = [
        ("query", Self::QUERY),
        ("documents:read", Self::DOCUMENTS_READ),
        ("documents:write", Self::DOCUMENTS_WRITE),
        ("admin", Self::ADMIN),
    ];

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Query covers chat; writing documents implies reading them; admin
    /// covers everything.
    pub fn allow(self, what: Use) -> bool {
        if self.contains(Self::ADMIN) {
            return true;
        }
        match what {
            Use::Query | Use::Chat => self.contains(Self::QUERY),
            Use::DocumentsRead => {
                self.contains(Self::DOCUMENTS_READ) || self.contains(Self::DOCUMENTS_WRITE)
            }
            Use::DocumentsWrite => self.contains(Self::DOCUMENTS_WRITE),
            Use::Admin => false,
        }
    }

    /// Parses scope names; None names the first unknown one.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        names.into_iter().try_fold(Self::default(), |acc, name| {
            Self::NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| acc.union(*s))
                .ok_or(name)
        })
    }

    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, s)| self.contains(*s))
            .map(|(n, _)| *n)
            .collect()
    }

    pub fn bits(self) -> i16 {
        i16::from(self.0)
    }

    pub fn from_bits(bits: i16) -> Self {
        Self((bits & 0x0f) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_refuse_unknown_names() {
        let scopes = Scopes::parse(["query", "documents:read"]).unwrap();
        assert_eq!(scopes.names(), ["query", "documents:read"]);
        assert_eq!(Scopes::from_bits(scopes.bits()), scopes);
        assert_eq!(Scopes::parse(["query", "root"]), Err("root"));
    }

    #[test]
    fn scopes_permit_only_their_uses() {
        let query = Scopes::QUERY;
        assert!(query.allow(Use::Query) && query.allow(Use::Chat));
        assert!(!query.allow(Use::DocumentsRead) && !query.allow(Use::Admin));
        let write = Scopes::DOCUMENTS_WRITE;
        assert!(write.allow(Use::DocumentsRead) && write.allow(Use::DocumentsWrite));
        assert!(!write.allow(Use::Query));
        assert!(Scopes::ADMIN.allow(Use::DocumentsWrite) && Scopes::ADMIN.allow(Use::Admin));
        let visitor = Caller {
            user_id: UserId::new(),
            grant: Some(Grant::Visitor {
                widget_id: uuid::Uuid::nil(),
                workspace: WorkspaceId::new(),
                visitor: uuid::Uuid::nil(),
            }),
        };
        assert!(visitor.permits(Use::Chat) && !visitor.permits(Use::Query));
    }
}
