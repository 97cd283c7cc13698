//! File tools: the jail (escape table), read/write/list semantics, run_file and resources.
