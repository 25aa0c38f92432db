//! Sans-I/O SMTP: reply parsing, command classification and the relay state machine.
