//! Admin client.
