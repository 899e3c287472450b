"""What several test files share: stand-in engines (more to move here: the local HTTP
servers, the other stand-ins)."""
