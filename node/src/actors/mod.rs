//! The built-in actor types.

pub mod account;
pub mod user;

pub use account::AccountActor;
pub use user::UserActor;
