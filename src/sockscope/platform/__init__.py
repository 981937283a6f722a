"""OS-specific calls live here (Linux now); a BSD backend can join later."""
