//! The core's rules, driven step by step: commands and reports in, what
//! reached mailboxes and executors out. No runtime, no sockets; time is
//! passed in.
