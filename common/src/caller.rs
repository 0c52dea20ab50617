//! Who is asking: what every workspace operation takes, resolved from
//! a token by [`crate::auth`].

use crate::ids::UserId;

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
}
