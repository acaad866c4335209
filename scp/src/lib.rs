//! scp
