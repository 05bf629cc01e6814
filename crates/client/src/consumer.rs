//! Simple consumer (manual assignment, no groups).
