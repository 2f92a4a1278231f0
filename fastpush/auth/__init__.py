"""Access keys and the JWTs signed with them: client access tokens and REST bearer tokens."""
