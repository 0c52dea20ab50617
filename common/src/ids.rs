//! Id newtypes, so a workspace id can never be passed where a user id is expected.

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize, sqlx::Type)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUIDv7 keeps B-tree inserts local).
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(id: uuid::Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// A user, built-in or from an external issuer.
    UserId
);
id_type!(
    /// A workspace: the tenant boundary.
    WorkspaceId
);
id_type!(
    /// A document in a workspace.
    DocumentId
);
id_type!(
    /// One chunk of a document's text.
    ChunkId
);
id_type!(
    /// An invitation to join a workspace.
    InvitationId
);
id_type!(
    /// A share link to one object of a workspace.
    ShareLinkId
);
id_type!(
    /// A workspace job: an import, an export or a classification.
    JobId
);
id_type!(
    /// A classification scheme.
    SchemeId
);
