//! One module per page. Tenant pages live under `/t/{tenant}/…` inside [`tenant::TenantLayout`].

pub mod audit;
pub mod data_rules;
pub mod gateways;
pub mod groups;
pub mod home;
pub mod kill_switch;
pub mod login;
pub mod publish;
pub mod rate_limits;
pub mod roles;
pub mod rules;
pub mod servers;
pub mod sessions;
pub mod tenant;
pub mod tokens;
pub mod users;
pub mod virtual_servers;
