//! Tern's classic consumer-group coordinator (in progress): the `__consumer_offsets` record
//! formats ([`records`]).

pub mod records;

pub use records::partition_for;
