"""One function per user action: (session, plain arguments) -> result. Services flush; callers commit."""
