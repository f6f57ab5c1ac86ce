pub mod dispatcher;
pub mod policy;
pub mod sip;
pub mod transaction;
pub mod transport;
