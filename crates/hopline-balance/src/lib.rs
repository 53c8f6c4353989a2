//! hopline-balance: the load balancer core (being built).
