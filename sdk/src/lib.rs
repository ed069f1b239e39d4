//! Portcullis plugin SDK.
