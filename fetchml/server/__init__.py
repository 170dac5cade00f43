"""HTTP transport: Litestar app, auth, rate limiting, error envelope. No business rules here."""
