pub mod sim;
pub mod types;
