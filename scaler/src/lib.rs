//! scaler
