"""The socket inventory: model, sock_diag queries, owners, namespaces, filters."""
