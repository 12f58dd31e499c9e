pub mod acm;
pub mod acm_client;
